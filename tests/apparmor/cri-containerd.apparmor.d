# containerd's default AppArmor profile for CRI containers, `cri-containerd.apparmor.d`, as
# containerd generates and loads it on a Debian 12 node (apparmor 3.0.8), for
# tests/tests/apparmor.rs.
#
# Source: github.com/containerd/containerd, contrib/apparmor/template.go at v2.3.4 (the
# newest release; the same template as main at 301026e58c, Aug 2026), rendered with:
#   Name          = cri-containerd.apparmor.d
#   Abi           = abi/3.0                       (/etc/apparmor.d/abi/3.0 exists)
#   Imports       = #include <tunables/global>    (/etc/apparmor.d/tunables/global exists)
#   InnerImports  = #include <abstractions/base>  (/etc/apparmor.d/abstractions/base exists)
#   DaemonProfile = unconfined                    (containerd runs unconfined)
#   RootlessKit   = ""                            (no rootlesskit on a node)
# Nothing else is changed: the lines after this header are the template's output, byte for
# byte. containerd 1.7's template differs only in its /proc rules (and has no abi line); its
# /sys rules are these. CRI-O's `crio-default` is rendered from containers/common's
# pkg/apparmor template, which has the same `deny /sys/fs/[^c]*/** wklx` family of /sys rules
# (all but the powercap line), so what this profile does to a pin directory under /sys/fs/bpf,
# it does too.

abi <abi/3.0>,


#include <tunables/global>


profile cri-containerd.apparmor.d flags=(attach_disconnected,mediate_deleted) {

  #include <abstractions/base>


  network,
  capability,
  file,
  umount,
  # Host (privileged) processes may send signals to container processes.
  signal (receive) peer=unconfined,
  # runc may send signals to container processes.
  signal (receive) peer=runc,
  # crun may send signals to container processes.
  signal (receive) peer=crun,
  # Manager may send signals to container processes.
  signal (receive) peer=unconfined,
  # Container processes may send signals amongst themselves.
  signal (send,receive) peer=cri-containerd.apparmor.d,


  deny @{PROC}/* w,   # deny write for all files directly in /proc (not in a subdir)
  # deny write to files not in /proc/<number>/** or /proc/sys/**
  deny @{PROC}/{[^1-9/],[^1-9/][^0-9/],[^1-9s/][^0-9y/][^0-9s/],[^1-9/][^0-9/][^0-9/][^0-9/]*}/** w,
  deny @{PROC}/sys/[^k]** w,  # deny /proc/sys except /proc/sys/k* (effectively /proc/sys/kernel)
  deny @{PROC}/sys/kernel/{?,??,[^s][^h][^m]**} w,  # deny everything except shm* in /proc/sys/kernel/
  deny @{PROC}/sysrq-trigger rwklx,
  deny @{PROC}/kcore rwklx,

  deny mount,

  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/devices/virtual/powercap/** rwklx,
  deny /sys/kernel/security/** rwklx,

  # allow processes within the container to trace each other,
  # provided all other LSM and yama setting allow it.
  ptrace (trace,tracedby,read,readby) peer=cri-containerd.apparmor.d,
}
