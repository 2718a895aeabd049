//! `/proc/<pid>/stat`: a process's parent and the CPU time it has used.

/// What `/proc/<pid>/stat` says of a process.
pub struct ProcessStat {
    pub parent: u32,
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
}

/// `/proc/<pid>/stat` read (`None` once the process is gone).
pub fn read(pid: u32) -> Option<ProcessStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at `state` (field 3).
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let number = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf has no memory-safety preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // ppid is field 4; utime and stime are fields 14 and 15 (1, 11 and 12 after `state`).
    Some(ProcessStat {
        parent: number(1)? as u32,
        cpu_seconds: (number(11)? + number(12)?) as f64 / per_second,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_reads_with_its_parent_and_a_gone_one_reads_as_none() {
        let me = super::read(std::process::id()).expect("this process");
        // SAFETY: getppid has no preconditions.
        assert_eq!(me.parent, unsafe { libc::getppid() } as u32);
        assert!(me.cpu_seconds >= 0.0);
        assert!(super::read(u32::MAX).is_none());
    }
}
