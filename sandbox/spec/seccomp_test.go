package spec

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func allowed(s *specs.LinuxSeccomp, name string) (unconditional, conditional bool) {
	for _, sc := range s.Syscalls {
		if sc.Action != specs.ActAllow || !slices.Contains(sc.Names, name) {
			continue
		}
		if len(sc.Args) == 0 {
			unconditional = true
		} else {
			conditional = true
		}
	}
	return
}

func TestDefaultSeccomp(t *testing.T) {
	def := DefaultSeccomp(&specs.LinuxCapabilities{Bounding: DefaultCapabilities})
	if def.DefaultAction != specs.ActErrno {
		t.Errorf("default action %s", def.DefaultAction)
	}
	if runtime.GOARCH == "amd64" && !slices.Equal(def.Architectures, []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}) {
		t.Errorf("arches %v", def.Architectures)
	}
	for _, name := range []string{"read", "write", "execve", "clone3" /* not allowed */, "futex", "openat2", "rseq", "close_range", "ptrace"} {
		u, _ := allowed(def, name)
		if want := name != "clone3"; u != want {
			t.Errorf("%s unconditionally allowed = %v, want %v", name, u, want)
		}
	}
	for _, name := range []string{"mount", "unshare", "setns", "bpf", "reboot", "kexec_load", "init_module", "io_uring_setup", "keyctl", "add_key", "open_by_handle_at", "settimeofday", "acct"} {
		if u, c := allowed(def, name); u || c {
			t.Errorf("%s allowed without its capability", name)
		}
	}
	if u, _ := allowed(def, "chroot"); !u {
		t.Error("chroot must be allowed with CAP_SYS_CHROOT (default set)")
	}
	// clone: only without namespace flags; clone3: ENOSYS.
	if u, c := allowed(def, "clone"); u || !c {
		t.Errorf("clone: unconditional %v conditional %v", u, c)
	}
	var clone3 *specs.LinuxSyscall
	for i, sc := range def.Syscalls {
		if slices.Contains(sc.Names, "clone3") {
			clone3 = &def.Syscalls[i]
		}
		if slices.Contains(sc.Names, "clone") && len(sc.Args) == 1 {
			a := sc.Args[0]
			if a.Op != specs.OpMaskedEqual || a.Value&unix.CLONE_NEWUSER == 0 || a.ValueTwo != 0 {
				t.Errorf("clone arg %+v", a)
			}
		}
	}
	if clone3 == nil || clone3.Action != specs.ActErrno || clone3.ErrnoRet == nil || *clone3.ErrnoRet != uint(unix.ENOSYS) {
		t.Errorf("clone3 rule %+v", clone3)
	}
	// personality only for the harmless personas.
	if u, c := allowed(def, "personality"); u || !c {
		t.Error("personality must be argument-restricted")
	}

	admin := DefaultSeccomp(&specs.LinuxCapabilities{Bounding: append(slices.Clone(DefaultCapabilities), "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_TIME")})
	for _, name := range []string{"mount", "unshare", "setns", "clone", "clone3", "bpf", "kcmp", "process_vm_readv", "settimeofday", "clock_settime"} {
		if u, _ := allowed(admin, name); !u {
			t.Errorf("%s not allowed with its capability", name)
		}
	}
	for _, sc := range admin.Syscalls {
		if slices.Contains(sc.Names, "clone3") && sc.Action != specs.ActAllow {
			t.Error("clone3 ENOSYS rule must not be there with CAP_SYS_ADMIN")
		}
	}
	if none := DefaultSeccomp(nil); len(none.Syscalls) == 0 {
		t.Error("nil caps profile is empty")
	}
}

func TestSeccompProfileSelection(t *testing.T) {
	dir := t.TempDir()
	prof := filepath.Join(dir, "profile.json")
	os.WriteFile(prof, []byte(`{
		"defaultAction": "SCMP_ACT_ERRNO",
		"defaultErrnoRet": 1,
		"archMap": [
			{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
			{"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
		],
		"syscalls": [
			{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
			{"name": "getpid", "action": "SCMP_ACT_ALLOW"},
			{"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
			{"names": ["chown"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_CHOWN"]}},
			{"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
			{"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}
		]
	}`), 0o644)
	outside := filepath.Join(t.TempDir(), "evil.json")
	os.WriteFile(outside, []byte(`{"defaultAction":"SCMP_ACT_ALLOW"}`), 0o644)
	link := filepath.Join(dir, "link.json")
	os.Symlink(outside, link)
	os.Mkdir(filepath.Join(dir, "adir"), 0o755)
	os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{`), 0o644)

	caps := &specs.LinuxCapabilities{Bounding: DefaultCapabilities}
	rd := runtimeapi.SecurityProfile_RuntimeDefault
	tests := []struct {
		name       string
		p          *runtimeapi.SecurityProfile
		legacy     string
		privileged bool
		want       string // "", "default", "localhost"
		errField   string
	}{
		{name: "nothing set is unconfined", want: ""},
		{name: "runtime default", p: &runtimeapi.SecurityProfile{ProfileType: rd}, want: "default"},
		{name: "unconfined", p: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}, want: ""},
		{name: "privileged ignores profile", p: &runtimeapi.SecurityProfile{ProfileType: rd}, privileged: true, want: ""},
		{name: "localhost", p: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: prof}, want: "localhost"},
		{name: "localhost missing file", p: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: filepath.Join(dir, "nope.json")}, errField: "linux.security_context.seccomp.localhost_ref"},
		{name: "localhost empty ref", p: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost}, errField: "linux.security_context.seccomp.localhost_ref"},
		{name: "localhost relative", p: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "profile.json"}, errField: "linux.security_context.seccomp.localhost_ref"},
		{name: "localhost symlink out of root", p: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: link}, errField: "linux.security_context.seccomp.localhost_ref"},
		{name: "localhost dotdot out of root", p: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: dir + "/../" + filepath.Base(filepath.Dir(outside)) + "/evil.json"}, errField: "linux.security_context.seccomp.localhost_ref"},
		{name: "localhost directory", p: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: filepath.Join(dir, "adir")}, errField: "linux.security_context.seccomp.localhost_ref"},
		{name: "localhost bad json", p: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: filepath.Join(dir, "bad.json")}, errField: "linux.security_context.seccomp.localhost_ref"},
		{name: "ref without Localhost", p: &runtimeapi.SecurityProfile{ProfileType: rd, LocalhostRef: prof}, errField: "linux.security_context.seccomp.localhost_ref"},
		{name: "legacy runtime/default", legacy: "runtime/default", want: "default"},
		{name: "legacy docker/default", legacy: "docker/default", want: "default"},
		{name: "legacy unconfined", legacy: "unconfined", want: ""},
		{name: "legacy localhost", legacy: "localhost/" + prof, want: "localhost"},
		{name: "legacy localhost missing", legacy: "localhost/" + dir + "/nope.json", errField: "linux.security_context.seccomp_profile_path.localhost_ref"},
		{name: "legacy invalid", legacy: "bogus", errField: "linux.security_context.seccomp_profile_path"},
		{name: "new field wins over legacy", p: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}, legacy: "runtime/default", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := seccompProfile(tt.p, tt.legacy, tt.privileged, caps, dir, "linux.security_context.")
			if tt.errField != "" {
				if err == nil || !IsInvalidArgument(err) || !strings.HasPrefix(err.Error(), tt.errField+":") {
					t.Fatalf("want %s error, got %v", tt.errField, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch tt.want {
			case "":
				if got != nil {
					t.Errorf("want unconfined, got a profile")
				}
			case "default":
				if got == nil || len(got.Syscalls) < 5 {
					t.Errorf("want the default profile, got %+v", got)
				}
			case "localhost":
				if got == nil || got.DefaultAction != specs.ActErrno || got.DefaultErrnoRet == nil || *got.DefaultErrnoRet != 1 {
					t.Fatalf("localhost profile %+v", got)
				}
				if u, _ := allowed(got, "getpid"); !u {
					t.Error(`"name" form not converted`)
				}
				if u, _ := allowed(got, "mount"); u {
					t.Error("mount included without CAP_SYS_ADMIN")
				}
				if u, _ := allowed(got, "chown"); u {
					t.Error("chown not excluded with CAP_CHOWN")
				}
				if runtime.GOARCH == "amd64" {
					if !slices.Equal(got.Architectures, []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}) {
						t.Errorf("arches %v", got.Architectures)
					}
					if u, _ := allowed(got, "arch_prctl"); !u {
						t.Error("arch include for amd64 dropped")
					}
				}
				if _, c := allowed(got, "personality"); !c {
					t.Error("args lost")
				}
			}
		})
	}
}
