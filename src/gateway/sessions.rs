//! Session-based clients (HTTP sessions and stdio): the table of open sessions with its
//! limits, and the gateway's part in opening, ending and reaping them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Gateway;
use crate::session::Session;

/// Most session-based client sessions kept at once: each costs memory until it ends or idles
/// out, and anyone who can reach `/mcp` can open one.
const MAX_SESSIONS: usize = 10_000;

/// The open sessions by id, bounded in all and per subject.
pub(super) struct SessionTable {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Most sessions at once, of every transport and subject.
    max: usize,
}

/// A session taken into the table.
pub(super) struct Admitted {
    /// The session of the same subject it displaced (already out of the table, to be closed).
    pub evicted: Option<Arc<Session>>,
    /// Sessions of its transport open now.
    pub open: usize,
}

/// A session taken out of the table.
pub(super) struct Removed {
    pub session: Arc<Session>,
    /// Sessions of its transport still open.
    pub open: usize,
}

impl SessionTable {
    pub(super) fn new(max: usize) -> SessionTable {
        SessionTable { sessions: Mutex::new(HashMap::new()), max }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().expect("sessions lock")
    }

    /// Takes `s` in; `None` at a limit. A subject with `per_subject` sessions of this transport
    /// already gives up its longest-idle one with no call in flight; if all of them are busy,
    /// it gets none.
    pub(super) fn insert(&self, s: &Arc<Session>, per_subject: usize) -> Option<Admitted> {
        let mut sessions = self.lock();
        let own = sessions.values().filter(|x| x.transport == s.transport && x.subject == s.subject);
        let evicted = if own.clone().count() >= per_subject {
            let oldest = own.filter(|x| !x.has_calls()).max_by_key(|x| x.idle_for()).map(|x| x.id.clone());
            // All of them busy: this subject gets no more sessions for now.
            sessions.remove(&oldest?)
        } else {
            None
        };
        if sessions.len() >= self.max {
            // Only reached when this subject had room: nothing was evicted.
            return None;
        }
        sessions.insert(s.id.clone(), s.clone());
        let open = sessions.values().filter(|x| x.transport == s.transport).count();
        Some(Admitted { evicted, open })
    }

    pub(super) fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().get(id).cloned()
    }

    pub(super) fn remove(&self, id: &str) -> Option<Removed> {
        let mut sessions = self.lock();
        let session = sessions.remove(id)?;
        let open = sessions.values().filter(|x| x.transport == session.transport).count();
        Some(Removed { session, open })
    }

    /// The ids of sessions of `transport` unused for longer than `limit`, with nothing in flight.
    pub(super) fn idle(&self, transport: &str, limit: Duration) -> Vec<String> {
        self.lock()
            .values()
            .filter(|s| s.transport == transport && s.idle_for() > limit && !s.is_busy())
            .map(|s| s.id.clone())
            .collect()
    }

    /// Runs `f` on every open session, under the table's lock (`f` must not come back here).
    pub(super) fn for_each(&self, mut f: impl FnMut(&Session)) {
        for s in self.lock().values() {
            f(s);
        }
    }
}

impl Default for SessionTable {
    fn default() -> SessionTable {
        SessionTable::new(MAX_SESSIONS)
    }
}

impl Gateway {
    /// Registers a new session-based client session; `None` at the session limit. A subject
    /// at its own limit (`max_sessions_per_subject`) first gives up its longest-idle session
    /// with no call in flight, so that one token cannot hold every session there is; if all of
    /// its sessions are busy, it gets none.
    pub fn new_session(&self, transport: &'static str, subject: Option<&str>) -> Option<Arc<Session>> {
        let per_subject = self.config().server.max_sessions_per_subject;
        let s = Arc::new(Session::new(uuid::Uuid::new_v4().to_string(), transport, subject));
        let admitted = self.sessions.insert(&s, per_subject)?;
        self.metrics.sessions(transport, admitted.open as i64);
        if let Some(old) = admitted.evicted {
            tracing::info!(
                subject = subject.unwrap_or("-"),
                "session limit of the subject reached: its longest-idle session is ended for a new one"
            );
            self.close_session(&old);
        }
        Some(s)
    }

    /// This replica's session `id`, if open here (see `find_session` for any replica's).
    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.get(id)
    }

    /// Ends the session `id` here; whether it was open.
    pub fn end_session(&self, id: &str) -> bool {
        let Some(removed) = self.sessions.remove(id) else { return false };
        self.metrics.sessions(removed.session.transport, removed.open as i64);
        self.close_session(&removed.session);
        true
    }

    /// Ends a session already taken out of the table: its streams and subscriptions.
    pub(super) fn close_session(&self, s: &Session) {
        s.close();
        for uri in s.take_subscriptions() {
            self.count_subscription(&uri, false);
        }
    }

    /// Ends HTTP sessions unused for longer than the configured idle timeout.
    pub fn reap_idle_sessions(&self) {
        let limit = self.config().server.session_idle_timeout;
        for id in self.sessions.idle("http", limit) {
            self.end_session(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, transport: &'static str, subject: &str) -> Arc<Session> {
        Arc::new(Session::new(id.into(), transport, Some(subject)))
    }

    #[test]
    fn a_session_is_found_until_removed() {
        let t = SessionTable::default();
        let a = t.insert(&session("a", "http", "alice"), 10).expect("room");
        assert_eq!((a.evicted.is_none(), a.open), (true, 1));
        t.insert(&session("b", "stdio", "alice"), 10).expect("room");
        assert_eq!(t.get("a").map(|s| s.id.clone()).as_deref(), Some("a"));
        let r = t.remove("a").expect("present");
        assert_eq!((r.session.id.as_str(), r.open), ("a", 0), "open counts the transport's sessions");
        assert!(t.get("a").is_none());
        assert!(t.remove("a").is_none());
    }

    #[test]
    fn a_subject_at_its_limit_gives_up_a_session_without_calls() {
        let t = SessionTable::default();
        let busy = session("busy", "http", "alice");
        let _call = busy.start_call("1").expect("registered");
        t.insert(&busy, 2).expect("room");
        t.insert(&session("quiet", "http", "alice"), 2).expect("room");
        // Another subject and another transport do not count against alice's http limit.
        t.insert(&session("bob", "http", "bob"), 2).expect("room");
        t.insert(&session("stdio", "stdio", "alice"), 2).expect("room");
        let a = t.insert(&session("new", "http", "alice"), 2).expect("an idle one makes room");
        assert_eq!(a.evicted.map(|s| s.id.clone()).as_deref(), Some("quiet"));
        assert!(t.get("quiet").is_none() && t.get("busy").is_some() && t.get("new").is_some());
    }

    #[test]
    fn a_subject_whose_sessions_are_all_busy_gets_none() {
        let t = SessionTable::default();
        let busy = session("busy", "http", "alice");
        let _call = busy.start_call("1").expect("registered");
        t.insert(&busy, 1).expect("room");
        assert!(t.insert(&session("new", "http", "alice"), 1).is_none());
        assert!(t.get("new").is_none() && t.get("busy").is_some());
    }

    #[test]
    fn the_table_is_bounded_in_all() {
        let t = SessionTable::new(2);
        t.insert(&session("a", "http", "alice"), 10).expect("room");
        t.insert(&session("b", "http", "bob"), 10).expect("room");
        assert!(t.insert(&session("c", "http", "carol"), 10).is_none());
        assert!(t.get("c").is_none());
    }

    #[test]
    fn only_idle_sessions_of_the_transport_without_work_are_reaped() {
        let t = SessionTable::default();
        let busy = session("busy", "http", "alice");
        let _call = busy.start_call("1").expect("registered");
        t.insert(&busy, 10).expect("room");
        t.insert(&session("idle", "http", "alice"), 10).expect("room");
        t.insert(&session("stdio", "stdio", "alice"), 10).expect("room");
        assert_eq!(t.idle("http", Duration::ZERO), vec!["idle".to_string()]);
        assert!(t.idle("http", Duration::from_secs(3600)).is_empty());
    }
}
