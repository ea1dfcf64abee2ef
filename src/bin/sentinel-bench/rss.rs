//! A process's memory and CPU time as the kernel counts them: resident now (`VmRSS`) and the
//! peak since it started (`VmHWM`), from `/proc/<pid>/status` — the peak is the kernel's own
//! high-water mark, so no sampling interval can miss a spike — and user + system CPU time from
//! `/proc/<pid>/stat`.

use std::time::Duration;

#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss_kb: u64,
    pub peak_kb: u64,
    /// The private part of `rss_kb` (heap, stacks); the rest is mostly the binary's own code
    /// pages, mapped from the page cache and shared by every process running it.
    pub anon_kb: u64,
}

pub fn read(pid: u32) -> Option<Memory> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse(status: &str) -> Option<Memory> {
    let kb = |key: &str| {
        status.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
    };
    Some(Memory { rss_kb: kb("VmRSS:")?, peak_kb: kb("VmHWM:")?, anon_kb: kb("RssAnon:").unwrap_or(0) })
}

/// CPU time (user + system) the process has used so far.
pub fn cpu(pid: u32) -> Option<Duration> {
    cpu_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

#[allow(unsafe_code)]
fn cpu_of(stat: &str) -> Option<Duration> {
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    // utime and stime are fields 14 and 15, in clock ticks.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let ticks = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros(ticks * 1_000_000 / hz))
}

pub fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_rss_and_peak() {
        let m =
            super::parse("Name:\tsentinel\nVmHWM:\t   12345 kB\nVmRSS:\t    9876 kB\nRssAnon:\t 3000 kB\n").unwrap();
        assert_eq!((m.rss_kb, m.peak_kb, m.anon_kb), (9876, 12345, 3000));
        assert!(super::parse("Name:\tzombie\n").is_none());
    }

    #[test]
    #[allow(unsafe_code)]
    fn reads_cpu_ticks_past_an_odd_name() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(super::cpu_of(stat), Some(std::time::Duration::from_micros(300 * 1_000_000 / hz)));
    }

    #[test]
    fn reads_our_own() {
        let m = super::read(std::process::id()).expect("our own /proc status");
        assert!(m.rss_kb > 0 && m.peak_kb >= m.rss_kb);
    }
}
