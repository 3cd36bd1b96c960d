package spec

import (
	"runtime"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// defaultAllow is the RuntimeDefault allow-list: containerd's
// contrib/seccomp profile (itself Docker's default.json), with two
// changes taken from Docker's current default.json: the io_uring_* calls are
// not allowed (Docker dropped them in 2023 after a run of io_uring kernel
// CVEs), and the newer cachestat, fchmodat2, futex_{wait,wake,requeue} and
// map_shadow_stack are.
var defaultAllow = []string{
	"accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk",
	"cachestat", "capget", "capset", "chdir", "chmod", "chown", "chown32",
	"clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
	"clock_gettime", "clock_gettime64", "clock_nanosleep",
	"clock_nanosleep_time64", "close", "close_range", "connect",
	"copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create",
	"epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
	"epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
	"execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2",
	"fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir",
	"fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
	"fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock",
	"fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64",
	"fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex",
	"futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
	"futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64",
	"getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32",
	"getgroups", "getgroups32", "getitimer", "getpeername", "getpgid",
	"getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
	"getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list",
	"getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area",
	"gettid", "gettimeofday", "getuid", "getuid32", "getxattr",
	"inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
	"io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
	"io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup",
	"io_submit", "ipc", "kill", "landlock_add_rule",
	"landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32",
	"lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr",
	"_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64",
	"madvise", "map_shadow_stack", "membarrier", "memfd_create",
	"memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat",
	"mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect",
	"mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
	"mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
	"mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync",
	"munlock", "munlockall", "munmap", "nanosleep", "newfstatat",
	"_newselect", "open", "openat", "openat2", "pause", "pidfd_open",
	"pidfd_send_signal", "pipe", "pipe2", "poll", "ppoll", "ppoll_time64",
	"prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease",
	"pselect6", "pselect6_time64", "ptrace", "pwrite64", "pwritev",
	"pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
	"recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg",
	"remap_file_pages", "removexattr", "rename", "renameat", "renameat2",
	"restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
	"rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
	"rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
	"sched_getaffinity", "sched_getattr", "sched_getparam",
	"sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
	"sched_rr_get_interval", "sched_rr_get_interval_time64",
	"sched_setaffinity", "sched_setattr", "sched_setparam",
	"sched_setscheduler", "sched_yield", "seccomp", "select", "semctl",
	"semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile",
	"sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32",
	"setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups",
	"setgroups32", "setitimer", "setpgid", "setpriority", "setregid",
	"setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32",
	"setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
	"setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32",
	"setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
	"sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn",
	"socket", "socketcall", "socketpair", "splice", "stat", "stat64",
	"statfs", "statfs64", "statx", "symlink", "symlinkat", "sync",
	"sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time",
	"timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
	"timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
	"timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
	"timerfd_settime64", "times", "tkill", "truncate", "truncate64",
	"ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime",
	"utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4",
	"waitid", "waitpid", "write", "writev",
}

// capSyscalls are allowed only when the capability is in the bounding set.
var capSyscalls = map[string][]string{
	"CAP_DAC_READ_SEARCH": {"open_by_handle_at"},
	"CAP_SYS_ADMIN": {"bpf", "clone", "clone3", "fanotify_init", "fsconfig",
		"fsmount", "fsopen", "fspick", "lookup_dcookie", "mount",
		"mount_setattr", "move_mount", "name_to_handle_at", "open_tree",
		"perf_event_open", "quotactl", "quotactl_fd", "setdomainname",
		"sethostname", "setns", "syslog", "umount", "umount2", "unshare"},
	"CAP_SYS_BOOT":       {"reboot"},
	"CAP_SYS_CHROOT":     {"chroot"},
	"CAP_SYS_MODULE":     {"delete_module", "init_module", "finit_module"},
	"CAP_SYS_PACCT":      {"acct"},
	"CAP_SYS_PTRACE":     {"kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"},
	"CAP_SYS_RAWIO":      {"iopl", "ioperm"},
	"CAP_SYS_TIME":       {"settimeofday", "stime", "clock_settime", "clock_settime64"},
	"CAP_SYS_TTY_CONFIG": {"vhangup"},
	"CAP_SYS_NICE":       {"get_mempolicy", "mbind", "set_mempolicy"},
	"CAP_SYSLOG":         {"syslog"},
	"CAP_BPF":            {"bpf"},
	"CAP_PERFMON":        {"perf_event_open"},
}

func seccompArches() []specs.Arch {
	switch runtime.GOARCH {
	case "amd64":
		return []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
	case "386":
		return []specs.Arch{specs.ArchX86}
	case "arm64":
		return []specs.Arch{specs.ArchARM, specs.ArchAARCH64}
	case "arm":
		return []specs.Arch{specs.ArchARM}
	case "s390x":
		return []specs.Arch{specs.ArchS390, specs.ArchS390X}
	case "ppc64le":
		return []specs.Arch{specs.ArchPPC64LE}
	case "riscv64":
		return []specs.Arch{specs.ArchRISCV64}
	}
	return nil
}

func archSyscalls() []string {
	switch runtime.GOARCH {
	case "amd64":
		return []string{"arch_prctl", "modify_ldt"}
	case "386":
		return []string{"modify_ldt"}
	case "arm", "arm64":
		return []string{"arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"}
	case "ppc64le":
		return []string{"sync_file_range2", "swapcontext"}
	case "s390x":
		return []string{"s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"}
	case "riscv64":
		return []string{"riscv_flush_icache"}
	}
	return nil
}

// DefaultSeccomp returns the RuntimeDefault seccomp profile for a process
// with the given capabilities (nil: none): default action SCMP_ACT_ERRNO
// (EPERM), the allow-list, personality() limited to the harmless personas,
// the syscalls each granted capability unlocks, and — without CAP_SYS_ADMIN —
// clone() without namespace flags and clone3() failing with ENOSYS so libc
// falls back to clone().
func DefaultSeccomp(caps *specs.LinuxCapabilities) *specs.LinuxSeccomp {
	s := &specs.LinuxSeccomp{
		DefaultAction: specs.ActErrno,
		Architectures: seccompArches(),
		Syscalls: []specs.LinuxSyscall{{
			Names:  slices.Clone(defaultAllow),
			Action: specs.ActAllow,
		}},
	}
	// personality(PER_LINUX), PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and
	// the 0xffffffff query.
	for _, p := range []uint64{0x0, 0x0008, 0x20000, 0x20008, 0xffffffff} {
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{
			Names:  []string{"personality"},
			Action: specs.ActAllow,
			Args:   []specs.LinuxSeccompArg{{Index: 0, Value: p, Op: specs.OpEqualTo}},
		})
	}
	if a := archSyscalls(); len(a) > 0 {
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{Names: a, Action: specs.ActAllow})
	}
	var bounding []string
	if caps != nil {
		bounding = caps.Bounding
	}
	admin := false
	for _, c := range allCaps { // fixed order, so the profile is deterministic
		names, ok := capSyscalls[c]
		if !ok || !slices.Contains(bounding, c) {
			continue
		}
		if c == "CAP_SYS_ADMIN" {
			admin = true
		}
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{Names: slices.Clone(names), Action: specs.ActAllow})
	}
	if !admin {
		index := uint(0)
		if runtime.GOARCH == "s390x" {
			index = 1 // s390 swaps clone's first two arguments
		}
		const nsFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
			unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{
			Names:  []string{"clone"},
			Action: specs.ActAllow,
			Args:   []specs.LinuxSeccompArg{{Index: index, Value: nsFlags, ValueTwo: 0, Op: specs.OpMaskedEqual}},
		})
		nosys := uint(unix.ENOSYS)
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{
			Names:    []string{"clone3"},
			Action:   specs.ActErrno,
			ErrnoRet: &nosys,
		})
	}
	return s
}
