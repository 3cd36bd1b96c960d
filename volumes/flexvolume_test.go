package volumes

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseFlexResult(t *testing.T) {
	cases := []struct {
		name, out   string
		runErr      error
		notSup      bool
		errContains string
		device      string
	}{
		{name: "success", out: `{"status":"Success","device":"/dev/sdb"}`, device: "/dev/sdb"},
		{name: "not supported", out: `{"status":"Not supported","message":"no attach"}`, notSup: true},
		{name: "failure", out: `{"status":"Failure","message":"disk on fire"}`, errContains: "disk on fire"},
		{name: "failure with exit code", out: `{"status":"Failure","message":"nope"}`, runErr: errors.New("exit status 1"), errContains: "nope"},
		{name: "log lines before json", out: "mounting...\n{\"status\":\"Success\",\"device\":\"/dev/x\"}\n", device: "/dev/x"},
		{name: "garbage", out: "segfault", errContains: "unparsable"},
		{name: "garbage and exit", out: "oops", runErr: errors.New("exit status 2"), errContains: "exit status 2"},
		{name: "unknown status", out: `{"status":"Maybe"}`, errContains: "unknown status"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseFlexResult("attach", []byte(tc.out), tc.runErr)
			switch {
			case tc.notSup:
				if !errors.Is(err, errFlexNotSupported) {
					t.Fatalf("err = %v, want not supported", err)
				}
			case tc.errContains != "":
				if err == nil || !strings.Contains(err.Error(), tc.errContains) || errors.Is(err, errFlexNotSupported) {
					t.Fatalf("err = %v, want %q", err, tc.errContains)
				}
			default:
				if err != nil || r.Device != tc.device {
					t.Fatalf("r = %+v, err = %v", r, err)
				}
			}
		})
	}
}

// writeFakeDriver installs an sh FlexVolume driver at <dir>/test~fake/fake
// that logs each call to <dir>/calls and answers per op from the script.
func writeFakeDriver(t *testing.T, dir, body string) string {
	t.Helper()
	d := filepath.Join(dir, "test~fake")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho \"$@\" >> " + filepath.Join(dir, "calls") + "\n" + body
	p := filepath.Join(d, "fake")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func readCalls(t *testing.T, dir string) []string {
	b, _ := os.ReadFile(filepath.Join(dir, "calls"))
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestFlexDriverProtocol(t *testing.T) {
	dir := t.TempDir()
	writeFakeDriver(t, dir, `
case "$1" in
init) echo '{"status":"Success","capabilities":{"attach":false}}' ;;
mount) echo "{\"status\":\"Success\"}" ;;
attach) echo '{"status":"Not supported"}' ;;
unmount) echo '{"status":"Failure","message":"busy"}'; exit 1 ;;
*) echo '{"status":"Not supported"}' ;;
esac
`)
	reg := &flexRegistry{pluginDir: dir}
	ctx := context.Background()
	drv, caps, err := reg.get(ctx, "test/fake")
	if err != nil {
		t.Fatal(err)
	}
	if caps.Attach {
		t.Fatal("init said attach:false")
	}
	if _, err := drv.call(ctx, "mount", "/some/dir", `{"a":"b"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := drv.call(ctx, "attach", "{}", "node"); !errors.Is(err, errFlexNotSupported) {
		t.Fatalf("attach err = %v", err)
	}
	if _, err := drv.call(ctx, "unmount", "/some/dir"); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("unmount err = %v", err)
	}
	// init is cached.
	if _, _, err := reg.get(ctx, "test/fake"); err != nil {
		t.Fatal(err)
	}
	calls := readCalls(t, dir)
	want := []string{"init", "mount /some/dir {\"a\":\"b\"}", "attach {} node", "unmount /some/dir"}
	if strings.Join(calls, "|") != strings.Join(want, "|") {
		t.Fatalf("calls %q, want %q", calls, want)
	}
	if _, _, err := reg.get(ctx, "test/missing"); err == nil {
		t.Fatal("missing driver found")
	}
}

func TestFlexInitNotSupportedDefaultsToAttach(t *testing.T) {
	dir := t.TempDir()
	writeFakeDriver(t, dir, `echo '{"status":"Not supported"}'`)
	_, caps, err := (&flexRegistry{pluginDir: dir}).get(context.Background(), "test/fake")
	if err != nil {
		t.Fatal(err)
	}
	if !caps.Attach {
		t.Fatal("the kubelet's default capabilities have attach: true")
	}
}

func TestFlexOptionsJSON(t *testing.T) {
	got := flexOptionsJSON(map[string]string{"image": "/x"}, map[string]string{optFSType: "ext4", optReadWrite: "ro"})
	if got != `{"image":"/x","kubernetes.io/fsType":"ext4","kubernetes.io/readwrite":"ro"}` {
		t.Fatal(got)
	}
}

func TestLoopDriverRejectsBadOptions(t *testing.T) {
	ctx := context.Background()
	for _, js := range []string{`{}`, `{"image":"relative.img"}`, `not json`} {
		if _, err := (loopDriver{}).call(ctx, "attach", js, "node"); err == nil {
			t.Errorf("attach %s accepted", js)
		}
	}
	if _, err := (loopDriver{}).call(ctx, "mount", "/x", "{}"); !errors.Is(err, errFlexNotSupported) {
		t.Errorf("mount: %v, want not supported (default bind mount)", err)
	}
	if _, err := (loopDriver{}).call(ctx, "detach", "/dev/sda", "node"); err == nil {
		t.Error("detach of a non-loop device accepted")
	}
}

func TestParseMountInfo(t *testing.T) {
	data := []byte(`22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 7:3 / /var/lib/peapod/global/peapod~loop/pv\0401 rw,relatime - ext4 /dev/loop3 rw
37 22 0:50 /sub /var/lib/peapod/pods/u/volumes/kubernetes.io~empty-dir/mem rw - tmpfs tmpfs rw,size=1024k
`)
	ms, err := parseMountInfo(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("%d mounts", len(ms))
	}
	if ms[1].MountPoint != "/var/lib/peapod/global/peapod~loop/pv 1" || ms[1].Source != "/dev/loop3" || ms[1].Major != 7 || ms[1].Minor != 3 {
		t.Fatalf("%+v", ms[1])
	}
	if ms[2].FSType != "tmpfs" || ms[2].Root != "/sub" {
		t.Fatalf("%+v", ms[2])
	}
	if _, err := parseMountInfo([]byte("garbage line\n")); err == nil {
		t.Fatal("garbage accepted")
	}
}
