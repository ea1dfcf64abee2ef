//! A process's memory as the kernel counts it: resident now (`VmRSS`) and the peak since it
//! started (`VmHWM`), from `/proc/<pid>/status`. The peak is the kernel's own high-water mark,
//! so no sampling interval can miss a spike.

#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss_kb: u64,
    pub peak_kb: u64,
}

pub fn read(pid: u32) -> Option<Memory> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse(status: &str) -> Option<Memory> {
    let kb = |key: &str| {
        status.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
    };
    Some(Memory { rss_kb: kb("VmRSS:")?, peak_kb: kb("VmHWM:")? })
}

pub fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_rss_and_peak() {
        let m = super::parse("Name:\tsentinel\nVmHWM:\t   12345 kB\nVmRSS:\t    9876 kB\n").unwrap();
        assert_eq!((m.rss_kb, m.peak_kb), (9876, 12345));
        assert!(super::parse("Name:\tzombie\n").is_none());
    }

    #[test]
    fn reads_our_own() {
        let m = super::read(std::process::id()).expect("our own /proc status");
        assert!(m.rss_kb > 0 && m.peak_kb >= m.rss_kb);
    }
}
