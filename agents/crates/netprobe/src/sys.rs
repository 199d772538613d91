//! The few system calls the probe needs: per-socket congestion control, `TCP_INFO`, and the
//! CPU time of the calling thread.

use std::os::fd::AsRawFd;
use std::time::Duration;

/// Sets the socket's congestion control (`TCP_CONGESTION`).
pub fn set_congestion(sock: &impl AsRawFd, name: &str) -> std::io::Result<()> {
    // SAFETY: name is valid for its length; the kernel copies at most that many bytes.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Caps the socket's unsent data at `bytes` (`TCP_NOTSENT_LOWAT`): writes wait until the
/// kernel has sent most of what it holds, so a test ends soon after the sender stops.
pub fn set_notsent_lowat(sock: &impl AsRawFd, bytes: u32) -> std::io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: v is a valid int for the length given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&raw const v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The socket's congestion control as the kernel reports it.
pub fn congestion(sock: &impl AsRawFd) -> std::io::Result<String> {
    let mut buf = [0u8; 16];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf and len are valid; the kernel writes at most len bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            buf.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let s = &buf[..usize::try_from(len).unwrap_or(0).min(buf.len())];
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    Ok(String::from_utf8_lossy(&s[..end]).into_owned())
}

/// The parts of `struct tcp_info` (linux/tcp.h) the probe reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpInfo {
    /// Smoothed RTT, microseconds (`tcpi_rtt`).
    pub rtt_us: u32,
    /// Retransmitted segments over the connection's life (`tcpi_total_retrans`).
    pub total_retrans: u32,
    /// Lowest RTT seen, microseconds (`tcpi_min_rtt`); absent on old kernels.
    pub min_rtt_us: Option<u32>,
    /// Congestion window, segments (`tcpi_snd_cwnd`).
    pub snd_cwnd: u32,
}

/// Field offsets in `struct tcp_info`: eight one-byte fields, then 32-bit ones.
const RTT: usize = 68;
const SND_CWND: usize = 80;
const TOTAL_RETRANS: usize = 100;
const MIN_RTT: usize = 148;

/// Decodes the bytes `getsockopt(TCP_INFO)` returned.
pub fn parse_tcp_info(b: &[u8]) -> Option<TcpInfo> {
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_ne_bytes)
    };
    Some(TcpInfo {
        rtt_us: u32_at(RTT)?,
        total_retrans: u32_at(TOTAL_RETRANS)?,
        min_rtt_us: u32_at(MIN_RTT),
        snd_cwnd: u32_at(SND_CWND)?,
    })
}

/// Reads `TCP_INFO`.
pub fn tcp_info(sock: &impl AsRawFd) -> std::io::Result<TcpInfo> {
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf and len are valid; the kernel writes at most len bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    parse_tcp_info(&buf[..usize::try_from(len).unwrap_or(0).min(buf.len())])
        .ok_or_else(|| std::io::Error::other("TCP_INFO too short"))
}

/// CPU time (user + system) the calling thread has used.
pub fn thread_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid, and getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &raw mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_usec).unwrap_or(0) * 1000,
        )
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The TCP congestion controls this kernel offers to sockets.
pub fn available_congestion() -> Vec<String> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .map(|s| s.split_ascii_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn real_sockets_take_a_congestion_control_and_report_tcp_info() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (mut s, _) = l.accept().expect("accept");
        set_congestion(&c, "reno").expect("reno is always there");
        assert_eq!(congestion(&c).expect("get"), "reno");
        let e = set_congestion(&c, "no-such-cc").expect_err("unknown");
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        c.write_all(&[1u8; 100_000]).expect("write");
        let mut got = vec![0u8; 100_000];
        s.read_exact(&mut got).expect("read");
        let info = tcp_info(&c).expect("tcp_info");
        assert!(info.rtt_us > 0, "{info:?}");
        assert!(info.snd_cwnd > 0, "{info:?}");
        assert!(
            info.min_rtt_us
                .is_some_and(|m| m > 0 && m <= info.rtt_us.max(1) * 10),
            "{info:?}"
        );
    }

    #[test]
    fn thread_cpu_moves() {
        let a = thread_cpu();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(thread_cpu() > a);
    }

    #[test]
    fn short_tcp_info_is_none() {
        assert!(parse_tcp_info(&[0; 100]).is_none());
        let mut b = [0u8; 104];
        b[RTT..RTT + 4].copy_from_slice(&40_000u32.to_ne_bytes());
        b[TOTAL_RETRANS..TOTAL_RETRANS + 4].copy_from_slice(&7u32.to_ne_bytes());
        let i = parse_tcp_info(&b).expect("old kernel layout");
        assert_eq!((i.rtt_us, i.total_retrans, i.min_rtt_us), (40_000, 7, None));
    }
}
