//! A userspace link over TUN: what one namespace's TUN device transmits, the other's
//! receives, after a fixed one-way delay and with random loss. The kernel here has no
//! netem, so this is how the tests get a WAN-like path; rate is shaped by tbf on the TUN
//! devices, in the kernel, before packets reach the relay.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters of one direction.
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets passed on.
    pub forwarded: AtomicU64,
    /// Packets dropped on purpose (the loss model).
    pub dropped: AtomicU64,
    /// Packets the output device refused.
    pub write_errors: AtomicU64,
}

/// What the relay does to each packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// One-way delay.
    pub delay: Duration,
    /// Probability of dropping a packet, 0..1.
    pub loss: f64,
}

/// Opens a TUN device (IP packets, no extra header) named `name` in the calling thread's
/// network namespace.
pub fn open_tun(name: &str) -> std::io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::other(format!(
            "interface name {name:?} must have 1 to 15 bytes"
        )));
    }
    // SAFETY: a constant path; the fd is owned right away.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero ifreq is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF takes a pointer to an ifreq, which lives for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &raw mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// xorshift64*: fast, good enough to decide which packets to drop.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from the kernel, or the clock where that fails.
    pub fn new() -> Self {
        let mut b = [0u8; 8];
        // SAFETY: b is valid for 8 bytes.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
        let seed = if n == 8 {
            u64::from_ne_bytes(b)
        } else {
            Instant::now().elapsed().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15
        };
        Rng(seed | 1)
    }
    /// A seeded generator (tests).
    pub fn seeded(seed: u64) -> Self {
        Rng(seed | 1)
    }
    /// A uniform number in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

fn wait_readable(fd: &OwnedFd, timeout: Duration) -> std::io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: p and ts are valid for the call; no signal mask change.
    let n = unsafe { libc::ppoll(&raw mut p, 1, &raw const ts, std::ptr::null()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    if p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
        return Err(std::io::Error::other("the TUN device went away"));
    }
    Ok(n > 0)
}

/// Moves packets from `input` to `output` until `stop` is set or a device goes away.
pub fn forward(
    input: &OwnedFd,
    output: &OwnedFd,
    imp: Impairment,
    stop: &AtomicBool,
    counters: &Counters,
) -> std::io::Result<()> {
    let mut rng = Rng::new();
    // Packets waiting out their delay: (when due, buffer, length). Buffers are recycled
    // at full size, so a packet costs one read and one write, nothing more.
    let mut queue: VecDeque<(Instant, Vec<u8>, usize)> = VecDeque::new();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    const MAX_PACKET: usize = 65_536;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _, _)| *due <= now) {
            let Some((_, pkt, len)) = queue.pop_front() else {
                break;
            };
            // SAFETY: pkt is valid for len <= its length.
            let n = unsafe { libc::write(output.as_raw_fd(), pkt.as_ptr().cast(), len) };
            if n < 0 {
                counters.write_errors.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.forwarded.fetch_add(1, Ordering::Relaxed);
            }
            pool.push(pkt);
        }
        let wait = queue
            .front()
            .map_or(Duration::from_millis(100), |(due, _, _)| {
                due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(100));
        if !wait_readable(input, wait)? {
            continue;
        }
        for _ in 0..256 {
            let mut buf = pool.pop().unwrap_or_else(|| vec![0; MAX_PACKET]);
            // SAFETY: buf is valid for MAX_PACKET bytes.
            let n = unsafe { libc::read(input.as_raw_fd(), buf.as_mut_ptr().cast(), MAX_PACKET) };
            if n < 0 {
                pool.push(buf);
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted
                {
                    break;
                }
                return Err(e);
            }
            if imp.loss > 0.0 && rng.next_f64() < imp.loss {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                pool.push(buf);
                continue;
            }
            queue.push_back((
                Instant::now() + imp.delay,
                buf,
                usize::try_from(n).unwrap_or(0),
            ));
        }
    }
    Ok(())
}

/// A running relay: two threads, one per direction.
#[derive(Debug)]
pub struct Relay {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
    /// Counters for a→b and b→a.
    pub counters: [Arc<Counters>; 2],
}

impl Relay {
    /// Relays between two TUN fds, applying `imp` in both directions.
    pub fn start(a: OwnedFd, b: OwnedFd, imp: Impairment) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (a, b) = (Arc::new(a), Arc::new(b));
        let counters = [Arc::new(Counters::default()), Arc::new(Counters::default())];
        let mut threads = Vec::new();
        for (i, (from, to)) in [(Arc::clone(&a), Arc::clone(&b)), (b, a)]
            .into_iter()
            .enumerate()
        {
            let (stop, c) = (Arc::clone(&stop), Arc::clone(&counters[i]));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("relay-{i}"))
                    .spawn(move || forward(&from, &to, imp, &stop, &c))?,
            );
        }
        Ok(Relay {
            stop,
            threads,
            counters,
        })
    }

    /// Stops both directions and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_rate_is_what_was_asked() {
        let mut r = Rng::seeded(42);
        let n = 200_000;
        let lost = (0..n).filter(|_| r.next_f64() < 0.005).count();
        let rate = lost as f64 / f64::from(n);
        assert!((0.004..0.006).contains(&rate), "{rate}");
        let mut r = Rng::seeded(7);
        assert!(
            (0..1000)
                .map(|_| r.next_f64())
                .all(|x| (0.0..1.0).contains(&x))
        );
    }

    #[test]
    fn pipes_stand_in_for_tun_devices() {
        // A pipe behaves like a TUN fd for the relay: packets in, packets out, delayed.
        let mut fds = [0; 2];
        let mut out = [0; 2];
        // SAFETY: valid arrays of two ints.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) },
            0
        );
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::pipe2(out.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) },
            0
        );
        // SAFETY: fresh fds, owned once each.
        let (rin, win, rout, wout) = unsafe {
            (
                OwnedFd::from_raw_fd(fds[0]),
                OwnedFd::from_raw_fd(fds[1]),
                OwnedFd::from_raw_fd(out[0]),
                OwnedFd::from_raw_fd(out[1]),
            )
        };
        let stop = Arc::new(AtomicBool::new(false));
        let c = Arc::new(Counters::default());
        let (s2, c2) = (Arc::clone(&stop), Arc::clone(&c));
        let t = std::thread::spawn(move || {
            forward(
                &rin,
                &wout,
                Impairment {
                    delay: Duration::from_millis(50),
                    loss: 0.0,
                },
                &s2,
                &c2,
            )
        });
        let sent = Instant::now();
        // SAFETY: valid buffer.
        assert_eq!(
            unsafe { libc::write(win.as_raw_fd(), b"ping".as_ptr().cast(), 4) },
            4
        );
        assert!(wait_readable(&rout, Duration::from_secs(2)).expect("poll"));
        let took = sent.elapsed();
        assert!(
            took >= Duration::from_millis(50),
            "delivered after {took:?}"
        );
        assert!(took < Duration::from_secs(2), "delivered after {took:?}");
        let mut buf = [0u8; 8];
        // SAFETY: valid buffer.
        assert_eq!(
            unsafe { libc::read(rout.as_raw_fd(), buf.as_mut_ptr().cast(), 8) },
            4
        );
        assert_eq!(&buf[..4], b"ping");
        stop.store(true, Ordering::Relaxed);
        t.join().expect("join").expect("relay");
        assert_eq!(c.forwarded.load(Ordering::Relaxed), 1);
    }
}
