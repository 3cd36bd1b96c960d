package testenv_test

import (
	"context"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"peapod/hack/testenv"
	"peapod/hack/testimages/imagebuild"
)

func TestRegistryPushPull(t *testing.T) {
	var addr string
	t.Run("registry", func(t *testing.T) {
		start := time.Now()
		addr = testenv.Registry(t)
		t.Logf("registry started and images pushed in %v", time.Since(start).Round(time.Millisecond))
		set := testenv.Images(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		opts := imagebuild.RemoteOptions(ctx)

		for _, n := range set.All() {
			ref, err := name.ParseReference(testenv.Ref(addr, n.Repo), name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			desc, err := remote.Get(ref, opts...)
			if err != nil {
				t.Fatalf("get %s: %v", ref, err)
			}
			want, _ := n.Digest()
			if desc.Digest != want {
				t.Errorf("%s: registry has %s, built %s", ref, desc.Digest, want)
			}
		}

		// busybox-config's config survives the round trip.
		ref, _ := name.ParseReference(testenv.Ref(addr, imagebuild.RepoBusyboxConfig), name.Insecure)
		img, err := remote.Image(ref, opts...)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if c.User != imagebuild.ConfigUser || c.WorkingDir != imagebuild.ConfigWorkingDir ||
			c.StopSignal != imagebuild.ConfigStopSignal || !slices.Equal(c.Env, imagebuild.ConfigEnv) ||
			!slices.Equal(c.Entrypoint, imagebuild.ConfigEntrypoint) || !slices.Equal(c.Cmd, imagebuild.ConfigCmd) {
			t.Errorf("busybox-config config: %+v", c)
		}

		// Platform resolution of the multi-arch index.
		multi, _ := name.ParseReference(testenv.Ref(addr, imagebuild.RepoBusyboxMulti), name.Insecure)
		for _, tc := range []struct {
			p    v1.Platform
			want v1.Image
		}{{set.Platform, set.BusyboxOCI}, {set.FakePlatform, set.FakeArch}} {
			img, err := remote.Image(multi, append(opts, remote.WithPlatform(tc.p))...)
			if err != nil {
				t.Fatalf("%s for %s: %v", multi, tc.p, err)
			}
			got, _ := img.Digest()
			want, _ := tc.want.Digest()
			if got != want {
				t.Errorf("%s for %s resolved to %s, want %s", multi, tc.p, got, want)
			}
		}
	})
	if addr == "" {
		return // skipped
	}
	// The cleanup stopped the registry: nothing answers on its port any more.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("registry at %s still answers after its test ended", addr)
	}
}

func TestBusyboxRootfsRuns(t *testing.T) {
	testenv.Integration(t)
	dir := testenv.BusyboxRootfs(t, "")
	out, err := exec.Command("chroot", dir, "/bin/sh", "-c", "id -un; cat /etc/hostname 2>/dev/null; ls /bin/ls && echo ok").CombinedOutput()
	if err != nil {
		t.Fatalf("chroot %s /bin/sh: %v\n%s", dir, err, out)
	}
	if !strings.HasPrefix(string(out), "root\n") || !strings.Contains(string(out), "ok") {
		t.Errorf("unexpected output %q", out)
	}
}
