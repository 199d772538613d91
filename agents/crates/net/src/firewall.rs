//! Whether the host's input firewall drops what no rule accepts, read from nf_tables over
//! netlink (`NFT_MSG_GETCHAIN`, include/uapi/linux/netfilter/nf_tables.h), without `nft`.
//!
//! Every nf_tables base chain on a hook sees the packet, and a drop in any of them is final,
//! so a host denies by default when, for each address family it runs, some input base chain
//! (table family `inet`, or `ip` / `ip6`) has the policy drop: NixOS's nftables firewall
//! (`chain input { type filter hook input ...; policy drop; }`) and `iptables -P INPUT DROP`
//! through iptables-nft both read that way. Rules that end a chain with an explicit drop
//! instead of a policy are not interpreted. Tables of the legacy iptables (x_tables) are not
//! visible here, so a host that has them and no drop policy in nf_tables is not judged.
//!
//! Hand-written (over [`crate::netlink`]) because the alternatives run or link what a
//! collector should not: the `nftables` crate runs the `nft` binary, and libnftnl is a C
//! library; one read of the chains is a single netlink dump.

use std::path::Path;
use std::time::Duration;

use crate::netlink::{self, NLM_F_DUMP, NLM_F_REQUEST, NetlinkError, attrs};

/// `NFNL_SUBSYS_NFTABLES`.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_GETCHAIN`.
const NFT_MSG_GETCHAIN: u16 = 4;
/// Length of `struct nfgenmsg`.
const NFGENMSG_LEN: usize = 4;
/// `NFTA_CHAIN_TABLE` (string).
const NFTA_CHAIN_TABLE: u16 = 1;
/// `NFTA_CHAIN_NAME` (string).
const NFTA_CHAIN_NAME: u16 = 3;
/// `NFTA_CHAIN_HOOK` (nested).
const NFTA_CHAIN_HOOK: u16 = 4;
/// `NFTA_CHAIN_POLICY` (big-endian u32 verdict).
const NFTA_CHAIN_POLICY: u16 = 5;
/// `NFTA_HOOK_HOOKNUM` (big-endian u32).
const NFTA_HOOK_HOOKNUM: u16 = 1;
/// `NF_INET_LOCAL_IN`.
const NF_INET_LOCAL_IN: u32 = 1;
/// `NF_DROP`.
const NF_DROP: u32 = 0;

/// Table families (`NFPROTO_*`).
pub mod family {
    /// `NFPROTO_INET`: IPv4 and IPv6.
    pub const INET: u8 = 1;
    /// `NFPROTO_IPV4`.
    pub const IPV4: u8 = 2;
    /// `NFPROTO_IPV6`.
    pub const IPV6: u8 = 10;
}

/// One nf_tables chain, as far as the verdict needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The table's family (`NFPROTO_*`).
    pub family: u8,
    /// The table.
    pub table: String,
    /// The chain.
    pub name: String,
    /// The hook of a base chain; `None` for a regular chain.
    pub hook: Option<u32>,
    /// The policy verdict of a base chain.
    pub policy: Option<u32>,
}

impl Chain {
    fn drops_input(&self) -> bool {
        self.hook == Some(NF_INET_LOCAL_IN) && self.policy == Some(NF_DROP)
    }
}

fn be32(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(..4)?.try_into().ok()?))
}

fn string(p: &[u8]) -> String {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

/// The `NFT_MSG_GETCHAIN` dump request for every family.
pub fn dump_request() -> Vec<u8> {
    netlink::request(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETCHAIN,
        NLM_F_REQUEST | NLM_F_DUMP,
        0,
        // nfgenmsg: NFPROTO_UNSPEC, NFNETLINK_V0, res_id 0.
        [0, 0, 0, 0],
        &[],
    )
}

/// One chain from an answer's payload (after the netlink header).
pub fn parse_chain(payload: &[u8]) -> Result<Chain, NetlinkError> {
    let family = *payload
        .first()
        .ok_or_else(|| NetlinkError::Malformed("a chain message without nfgenmsg".into()))?;
    let mut chain = Chain {
        family,
        table: String::new(),
        name: String::new(),
        hook: None,
        policy: None,
    };
    for (kind, p) in attrs(payload.get(NFGENMSG_LEN..).unwrap_or_default())? {
        match kind {
            NFTA_CHAIN_TABLE => chain.table = string(p),
            NFTA_CHAIN_NAME => chain.name = string(p),
            NFTA_CHAIN_POLICY => chain.policy = be32(p),
            NFTA_CHAIN_HOOK => {
                for (hk, hp) in attrs(p)? {
                    if hk == NFTA_HOOK_HOOKNUM {
                        chain.hook = be32(hp);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(chain)
}

/// Every nf_tables chain of this network namespace (needs `CAP_NET_ADMIN`).
pub fn chains(timeout: Duration) -> Result<Vec<Chain>, NetlinkError> {
    let mut client = netlink::Client::open(libc::NETLINK_NETFILTER, timeout)?;
    let mut msg = dump_request();
    let mut out = Vec::new();
    client.exchange("NFT_MSG_GETCHAIN", &mut msg, |p| {
        out.push(parse_chain(p)?);
        Ok(())
    })?;
    Ok(out)
}

/// What the host's address families are: IPv4 always, IPv6 unless the kernel has it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    /// Whether IPv6 is on (`/proc/sys/net/ipv6` exists and `disable_ipv6` is 0).
    pub ipv6: bool,
    /// Whether legacy iptables (x_tables) tables exist (`/proc/net/ip_tables_names` or
    /// `ip6_tables_names` not empty), which nf_tables cannot show.
    pub legacy_tables: bool,
}

impl Families {
    /// Reads them from procfs at `proc_root`.
    pub fn read(proc_root: &Path) -> Self {
        let non_empty = |rel: &str| {
            std::fs::read_to_string(proc_root.join(rel)).is_ok_and(|s| !s.trim().is_empty())
        };
        let ipv6 = std::fs::read_to_string(proc_root.join("sys/net/ipv6/conf/all/disable_ipv6"))
            .is_ok_and(|s| s.trim() == "0");
        Families {
            ipv6,
            legacy_tables: non_empty("net/ip_tables_names") || non_empty("net/ip6_tables_names"),
        }
    }
}

/// The verdict: `Some(true)` if every address family in use drops by default, `Some(false)`
/// if one accepts by default, `None` if that cannot be told (legacy tables may decide).
pub fn default_deny(chains: &[Chain], families: Families) -> Option<bool> {
    let covered = |fam: u8| {
        chains
            .iter()
            .any(|c| (c.family == family::INET || c.family == fam) && c.drops_input())
    };
    let deny = covered(family::IPV4) && (!families.ipv6 || covered(family::IPV6));
    if deny {
        Some(true)
    } else if families.legacy_tables {
        None
    } else {
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{NLMSG_HDRLEN, messages, put_attr};

    /// A chain message as the kernel lays it out: nfgenmsg, then attributes.
    fn chain_msg(
        fam: u8,
        table: &str,
        name: &str,
        hook: Option<u32>,
        policy: Option<u32>,
    ) -> Vec<u8> {
        let mut a = Vec::new();
        let z = |s: &str| {
            let mut v = s.as_bytes().to_vec();
            v.push(0);
            v
        };
        put_attr(&mut a, NFTA_CHAIN_TABLE, &z(table));
        put_attr(&mut a, 2, &7u64.to_be_bytes()); // NFTA_CHAIN_HANDLE, ignored
        put_attr(&mut a, NFTA_CHAIN_NAME, &z(name));
        if let Some(h) = hook {
            let mut inner = Vec::new();
            put_attr(&mut inner, NFTA_HOOK_HOOKNUM, &h.to_be_bytes());
            put_attr(&mut inner, 2, &0u32.to_be_bytes()); // NFTA_HOOK_PRIORITY
            put_attr(&mut a, NFTA_CHAIN_HOOK | 0x8000, &inner); // NLA_F_NESTED
        }
        if let Some(p) = policy {
            put_attr(&mut a, NFTA_CHAIN_POLICY, &p.to_be_bytes());
        }
        put_attr(&mut a, 7, &z("filter")); // NFTA_CHAIN_TYPE
        netlink::request(
            (NFNL_SUBSYS_NFTABLES << 8) | 3, // NFT_MSG_NEWCHAIN, as a dump answers
            2,
            9,
            [fam, 0, 0, 0],
            &a,
        )
    }

    fn parsed(bytes: &[u8]) -> Vec<Chain> {
        messages(bytes)
            .expect("split")
            .iter()
            .map(|m| parse_chain(m.payload).expect("chain"))
            .collect()
    }

    #[test]
    fn the_request_is_a_getchain_dump() {
        let r = dump_request();
        assert_eq!(r.len(), NLMSG_HDRLEN + NFGENMSG_LEN);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 0x0a04);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), NLM_F_REQUEST | NLM_F_DUMP);
    }

    #[test]
    fn chains_are_read_from_kernel_layout() {
        let mut dgram = chain_msg(family::INET, "nixos-fw", "input", Some(1), Some(0));
        dgram.extend(chain_msg(
            family::INET,
            "nixos-fw",
            "input-allow",
            None,
            None,
        ));
        dgram.extend(chain_msg(
            family::IPV4,
            "filter",
            "OUTPUT",
            Some(3),
            Some(1),
        ));
        let c = parsed(&dgram);
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[0],
            Chain {
                family: family::INET,
                table: "nixos-fw".into(),
                name: "input".into(),
                hook: Some(1),
                policy: Some(0),
            }
        );
        assert_eq!((c[1].hook, c[1].policy), (None, None));
        assert_eq!((c[2].family, c[2].hook, c[2].policy), (2, Some(3), Some(1)));
    }

    #[test]
    fn truncated_answers_are_errors() {
        let m = chain_msg(family::INET, "t", "input", Some(1), Some(0));
        let msgs = messages(&m).expect("split");
        let payload = msgs[0].payload;
        // Cut inside an attribute: its length now runs past the end.
        assert!(parse_chain(&payload[..payload.len() - 6]).is_err());
        assert!(parse_chain(&[]).is_err());
    }

    fn ch(fam: u8, hook: u32, policy: u32) -> Chain {
        Chain {
            family: fam,
            table: "t".into(),
            name: "c".into(),
            hook: Some(hook),
            policy: Some(policy),
        }
    }

    #[test]
    fn the_verdict_needs_every_family_in_use() {
        let v4v6 = Families {
            ipv6: true,
            legacy_tables: false,
        };
        let v4 = Families {
            ipv6: false,
            ..v4v6
        };
        // NixOS: one inet input chain with policy drop covers both.
        assert_eq!(default_deny(&[ch(family::INET, 1, 0)], v4v6), Some(true));
        // iptables-nft -P INPUT DROP covers IPv4 only.
        assert_eq!(default_deny(&[ch(family::IPV4, 1, 0)], v4v6), Some(false));
        assert_eq!(default_deny(&[ch(family::IPV4, 1, 0)], v4), Some(true));
        assert_eq!(
            default_deny(&[ch(family::IPV4, 1, 0), ch(family::IPV6, 1, 0)], v4v6),
            Some(true)
        );
        // Accept policies, other hooks, or no chains: open.
        assert_eq!(default_deny(&[ch(family::INET, 1, 1)], v4v6), Some(false));
        assert_eq!(default_deny(&[ch(family::INET, 2, 0)], v4v6), Some(false));
        assert_eq!(default_deny(&[], v4v6), Some(false));
        // Legacy iptables tables may drop what nf_tables cannot show: no verdict.
        let legacy = Families {
            legacy_tables: true,
            ..v4v6
        };
        assert_eq!(default_deny(&[], legacy), None);
        assert_eq!(default_deny(&[ch(family::INET, 1, 0)], legacy), Some(true));
    }

    #[test]
    fn families_come_from_procfs() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path();
        assert_eq!(
            Families::read(p),
            Families {
                ipv6: false,
                legacy_tables: false
            }
        );
        std::fs::create_dir_all(p.join("sys/net/ipv6/conf/all")).expect("mkdir");
        std::fs::write(p.join("sys/net/ipv6/conf/all/disable_ipv6"), "0\n").expect("write");
        std::fs::create_dir_all(p.join("net")).expect("mkdir");
        std::fs::write(p.join("net/ip_tables_names"), "filter\n").expect("write");
        assert_eq!(
            Families::read(p),
            Families {
                ipv6: true,
                legacy_tables: true
            }
        );
    }
}
