package infra

import (
	"os"
	"testing"
)

func TestSysctlPath(t *testing.T) {
	for in, want := range map[string]string{
		"net.ipv4.ip_forward":               "/proc/sys/net/ipv4/ip_forward",
		"net.ipv4.conf.eth0/100.forwarding": "/proc/sys/net/ipv4/conf/eth0.100/forwarding",
		"kernel.shm_rmid_forced":            "/proc/sys/kernel/shm_rmid_forced",
		"fs.mqueue.msg_max":                 "/proc/sys/fs/mqueue/msg_max",
	} {
		if got := SysctlPath(in); got != want {
			t.Errorf("SysctlPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStartTimeOf(t *testing.T) {
	st, err := StartTimeOf(os.Getpid())
	if err != nil || st == 0 {
		t.Fatalf("StartTimeOf(self) = %d, %v", st, err)
	}
	if again, _ := StartTimeOf(os.Getpid()); again != st {
		t.Errorf("start time changed: %d then %d", st, again)
	}
	if _, err := StartTimeOf(1 << 30); err == nil {
		t.Error("no error for a pid that cannot exist")
	}
}
