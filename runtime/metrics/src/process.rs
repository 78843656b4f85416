//! The process's own CPU and memory, read from `/proc/self/stat` (Linux); what Flink reports
//! from the JVM (`Status.JVM.CPU.*`, `Status.JVM.Memory.*`), for a process without one.

/// CPU time, resident memory and threads of this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    pub threads: u64,
}

/// This process's statistics; `None` where `/proc` is not there.
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse(&stat, &status)
}

/// The machine's physical memory in bytes (`MemTotal` of `/proc/meminfo`; Flink's
/// `hardware.physicalMemory`); `None` where `/proc` is not there.
pub fn physical_memory_bytes() -> Option<u64> {
    mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The kernel reports CPU times in `/proc` in units of USER_HZ, which Linux fixes at 100 on
/// every architecture (the ABI of `times(2)` and `/proc`).
const USER_HZ: f64 = 100.0;

/// Parses `/proc/[pid]/stat` (the fields after the command name, which may hold spaces and
/// parentheses, so the last `)` ends it: utime and stime are fields 14 and 15, `man 5 proc`)
/// and `/proc/[pid]/status` (`VmRSS:` in kB, `Threads:`).
fn parse(stat: &str, status: &str) -> Option<ProcessStats> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    let line = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) as f64 / USER_HZ,
        threads: line("Threads:")?,
        rss_bytes: line("VmRSS:")? * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_with_odd_command_names() {
        let line = "4242 (flink (rs) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                    1234 567890 1000 18446744073709551615";
        let status = "Name:\tflink-rs\nVmRSS:\t   4000 kB\nThreads:\t7\n";
        let s = parse(line, status).expect("parses");
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.threads, 7);
        assert_eq!(s.rss_bytes, 4000 * 1024);
    }

    #[test]
    fn physical_memory_is_mem_total() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_576_000 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert!(physical_memory_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn this_process_reads() {
        let s = read().expect("/proc/self/stat on Linux");
        assert!(s.rss_bytes > 0 && s.threads >= 1, "{s:?}");
    }
}
