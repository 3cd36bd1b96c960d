package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/hack/testenv"
)

// skopeoBin is Debian's skopeo (package skopeo).
const skopeoBin = "/usr/bin/skopeo"

// TestImportSkopeoArchives: the test busybox, copied out of a local
// registry by Debian's skopeo as a docker-archive (its legacy
// <id>/layer.tar is a symlink to the layer blob), an oci-archive, and an
// OCI layout dir tarred from outside and from inside, each imports through
// `peapod images import` into a running daemon and runs a container. The
// image is removed between archives, so each import stands on its own.
// Pulls fail closed (docker.io mirrored to a closed port): the container
// can only run from what was imported.
func TestImportSkopeoArchives(t *testing.T) {
	reg := startRegistry(t)
	testenv.Require(t, skopeoBin, "skopeo")
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://127.0.0.1:1"}, agentDisabled: true})
	src := "docker://" + reg + "/library/busybox:latest"
	skopeo := func(t *testing.T, dst string) {
		t.Helper()
		// --insecure-policy: no dependence on the host's
		// /etc/containers/policy.json; the source is our loopback registry.
		out, err := exec.Command(skopeoBin, "--insecure-policy", "copy", "--src-tls-verify=false", src, dst).CombinedOutput()
		if err != nil {
			t.Fatalf("skopeo copy %s %s: %v\n%s", src, dst, err, out)
		}
	}
	tarDir := func(t *testing.T, out string, args ...string) {
		t.Helper()
		if b, err := exec.Command("tar", append([]string{"-cf", out}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("tar %v: %v\n%s", args, err, b)
		}
	}
	for i, tc := range []struct {
		name, ref string // ref: what skopeo names the image; the import must name it docker.io/<ref>
		make      func(t *testing.T, dir, ref string) string
	}{
		{"docker-archive", "peapod-e2e/skopeo-docker:1", func(t *testing.T, dir, ref string) string {
			p := filepath.Join(dir, "busybox.docker.tar")
			skopeo(t, "docker-archive:"+p+":"+ref)
			if out, _ := exec.Command("tar", "-tvf", p).Output(); !strings.Contains(string(out), "/layer.tar -> ") {
				t.Errorf("skopeo's docker-archive has no symlinked layer.tar (the case this test is for):\n%s", out)
			}
			return p
		}},
		{"oci-archive", "peapod-e2e/skopeo-oci:1", func(t *testing.T, dir, ref string) string {
			p := filepath.Join(dir, "busybox.oci.tar")
			skopeo(t, "oci-archive:"+p+":"+ref)
			return p
		}},
		{"OCI layout dir tarred from its parent", "peapod-e2e/skopeo-layout:1", func(t *testing.T, dir, ref string) string {
			skopeo(t, "oci:"+filepath.Join(dir, "layout")+":"+ref)
			p := filepath.Join(dir, "layout.tar")
			tarDir(t, p, "-C", dir, "layout")
			return p
		}},
		{"OCI layout dir tarred from inside", "peapod-e2e/skopeo-layout-inside:1", func(t *testing.T, dir, ref string) string {
			skopeo(t, "oci:"+filepath.Join(dir, "layout")+":"+ref)
			p := filepath.Join(dir, "layout.tar")
			tarDir(t, p, "-C", filepath.Join(dir, "layout"), ".")
			return p
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			archive := tc.make(t, t.TempDir(), tc.ref)
			want := "docker.io/" + tc.ref
			out, err := exec.Command(filepath.Join(binDir, "peapod"), "images", "import", "--config", d.cfgPath, archive).CombinedOutput()
			if err != nil {
				t.Fatalf("peapod images import %s: %v\n%s", tc.name, err, out)
			}
			if !strings.Contains(string(out), want) {
				t.Errorf("import printed %q, want the tag %s", out, want)
			}
			st, err := d.img.ImageStatus(d.ctx(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: want}})
			if err != nil || st.Image == nil {
				t.Fatalf("ImageStatus %s after import = %v, %v", want, st, err)
			}

			name := fmt.Sprintf("import-%d", i) // its own log dir: a log left by the one before cannot pass for this one
			pod := podConfig(d, name)
			podID := runPod(t, d, pod)
			cc := containerConfig("c", "sh", "-c", "echo ran-from-$IMPORTED; ls /bin/busybox")
			cc.Image = &runtimeapi.ImageSpec{Image: want}
			cc.Envs = []*runtimeapi.KeyValue{{Key: "IMPORTED", Value: []byte(name)}}
			id := startContainer(t, d, podID, pod, cc)
			cs := waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_EXITED)
			waitLog(t, filepath.Join(pod.LogDirectory, cc.LogPath), "ran-from-"+name)
			if cs.ExitCode != 0 {
				t.Errorf("container exit code %d", cs.ExitCode)
			}
			if cs.ImageId != st.Image.Id {
				t.Errorf("container image %s, want the imported %s", cs.ImageId, st.Image.Id)
			}

			ctx := d.ctx()
			if _, err := d.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
				t.Fatal(err)
			}
			if _, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
				t.Fatal(err)
			}
			if _, err := d.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: want}}); err != nil {
				t.Fatalf("RemoveImage %s: %v", want, err)
			}
		})
	}
}
