# labnode.network-tuning: TCP BBR with the fq qdisc it is designed for, and socket buffers
# large enough to fill a 10 GbE path with a long round trip (bandwidth x delay: 10 Gbit/s
# x 50 ms = 62.5 MB). The modules are loaded at boot so the sysctls never name a missing one.
{
  config,
  lib,
  ...
}: let
  cfg = config.labnode.network-tuning;
  max = toString cfg.maxBufferBytes;
  builtin = ["cubic" "reno"];
in {
  options.labnode.network-tuning = {
    enable = lib.mkEnableOption "TCP congestion control, qdisc and buffer tuning for 10 GbE";

    congestionControl = lib.mkOption {
      type = lib.types.str;
      default = "bbr";
      description = "TCP congestion control for new connections (`net.ipv4.tcp_congestion_control`).";
    };

    qdisc = lib.mkOption {
      type = lib.types.str;
      default = "fq";
      description = "Default queueing discipline (`net.core.default_qdisc`); BBR paces best with fq.";
    };

    maxBufferBytes = lib.mkOption {
      type = lib.types.ints.between 1048576 1073741824;
      default = 67108864;
      description = "Largest socket buffer TCP may autotune to, and the ceiling for SO_RCVBUF/SO_SNDBUF (bytes).";
    };
  };

  config = lib.mkIf cfg.enable {
    boot.kernelModules =
      lib.optional (!(lib.elem cfg.congestionControl builtin)) "tcp_${cfg.congestionControl}"
      ++ lib.optional (cfg.qdisc != "pfifo_fast") "sch_${cfg.qdisc}";

    boot.kernel.sysctl = {
      "net.ipv4.tcp_congestion_control" = cfg.congestionControl;
      "net.core.default_qdisc" = cfg.qdisc;
      "net.core.rmem_max" = cfg.maxBufferBytes;
      "net.core.wmem_max" = cfg.maxBufferBytes;
      "net.ipv4.tcp_rmem" = "4096 131072 ${max}";
      "net.ipv4.tcp_wmem" = "4096 65536 ${max}";
      # Find a working MSS when a path drops ICMP (common across tunnels).
      "net.ipv4.tcp_mtu_probing" = 1;
      # Room for bursts at 10 Gbit/s before the stack drops packets.
      "net.core.netdev_max_backlog" = 30000;
    };
  };
}
