package lxcfs

import (
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Mount
		wantErr string
	}{
		{name: "container view", in: "" +
			"598 597 0:60 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n" +
			"610 598 0:78 /proc/meminfo /proc/meminfo ro,nosuid,nodev,noexec,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other\n" +
			"611 600 0:78 /sys/devices/system/cpu/online /sys/devices/system/cpu/online ro master:1 - fuse.lxcfs lxcfs rw\n",
			want: []Mount{
				{Point: "/proc", FSType: "proc", Dev: unix.Mkdev(0, 60)},
				{Point: "/proc/meminfo", FSType: "fuse.lxcfs", Dev: unix.Mkdev(0, 78)},
				{Point: "/sys/devices/system/cpu/online", FSType: "fuse.lxcfs", Dev: unix.Mkdev(0, 78)},
			}},
		{name: "escaped space", in: "36 35 98:0 / /mnt/a\\040b rw - ext4 /dev/root rw\n",
			want: []Mount{{Point: "/mnt/a b", FSType: "ext4", Dev: unix.Mkdev(98, 0)}}},
		{name: "no separator", in: "36 35 98:0 / /mnt rw ext4 /dev/root rw\n", wantErr: "malformed"},
		{name: "bad device", in: "36 35 x:0 / /mnt rw - ext4 /dev/root rw\n", wantErr: "bad device"},
		{name: "empty", in: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMountinfo(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	live := unix.Mkdev(0, 80)
	dead := unix.Mkdev(0, 78)
	up := State{Up: true, Dev: live, Paths: Paths}
	lx := func(p string, dev uint64) Mount { return Mount{Point: p, FSType: fsType, Dev: dev} }
	base := []Mount{{Point: "/", FSType: "overlay"}, {Point: "/proc", FSType: "proc"}, {Point: "/sys", FSType: "sysfs"}}
	all := func(dev uint64) []Mount {
		out := append([]Mount(nil), base...)
		for _, p := range Paths {
			out = append(out, lx(p, dev))
		}
		return out
	}
	only := func(p string) func(string) bool { return func(x string) bool { return x == p } }
	tests := []struct {
		name   string
		mounts []Mount
		state  State
		want   func(string) bool
		plan   Plan
	}{
		{name: "attached to the live lxcfs: nothing", mounts: all(live), state: up, plan: Plan{}},
		{name: "no binds, lxcfs up: attach all", mounts: base, state: up, plan: Plan{Attach: Paths}},
		{name: "no binds, lxcfs down: nothing", mounts: base, state: State{Reason: ReasonNotMounted}, plan: Plan{}},
		{name: "dead binds, lxcfs down: detach all", mounts: all(dead), state: State{Reason: ReasonDisconnected}, plan: Plan{Detach: Paths}},
		{name: "dead binds, lxcfs back: swap", mounts: all(dead), state: up, plan: Plan{Detach: Paths, Attach: Paths}},
		{name: "live binds, lxcfs hung: detach", mounts: all(live), state: State{Reason: ReasonNotResponding}, plan: Plan{Detach: Paths}},
		{name: "two stale binds stacked", mounts: append(append([]Mount(nil), base...), lx("/proc/meminfo", unix.Mkdev(0, 70)), lx("/proc/meminfo", dead)),
			state: up, want: only("/proc/meminfo"), plan: Plan{Detach: []string{"/proc/meminfo", "/proc/meminfo"}, Attach: []string{"/proc/meminfo"}}},
		{name: "live bind over a stale one: nothing", mounts: append(append([]Mount(nil), base...), lx("/proc/meminfo", dead), lx("/proc/meminfo", live)),
			state: up, want: only("/proc/meminfo"), plan: Plan{}},
		{name: "the pod's own mount on top: left alone", mounts: append(append([]Mount(nil), base...), lx("/proc/meminfo", dead), Mount{Point: "/proc/meminfo", FSType: "ext4"}),
			state: up, want: only("/proc/meminfo"), plan: Plan{}},
		{name: "lxcfs without cpu online", mounts: base, state: State{Up: true, Dev: live, Paths: []string{"/proc/meminfo"}}, plan: Plan{Attach: []string{"/proc/meminfo"}}},
		{name: "path not wanted", mounts: base, state: up, want: func(p string) bool { return p != "/proc/stat" },
			plan: Plan{Attach: []string{"/proc/cpuinfo", "/proc/diskstats", "/proc/loadavg", "/proc/meminfo", "/proc/swaps", "/proc/uptime", "/sys/devices/system/cpu/online"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.mounts, tt.state, tt.want)
			if !reflect.DeepEqual(got, tt.plan) && !(got.Empty() && tt.plan.Empty()) {
				t.Fatalf("plan = %+v\nwant %+v", got, tt.plan)
			}
			if att := Attached(tt.mounts, tt.state, tt.want); att != (tt.state.Up && tt.plan.Empty()) {
				t.Fatalf("Attached = %v", att)
			}
		})
	}
}
