-- The kill switch at run time (src/kill_switch): what `sentinel kill-switch add` switched off,
-- on top of the config's `[kill_switch]`. Every gateway on this database polls it.
CREATE TABLE kill_switch (
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT,
    added_by TEXT NOT NULL,
    added_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, target)
);
