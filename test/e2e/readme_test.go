package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"peapod/hack/testimages/imagebuild"
)

// readmeManifest is a static pod example of README.md:
// cat > /etc/peapod/manifests/NAME <<'EOF' … EOF.
var readmeManifest = regexp.MustCompile(`(?s)cat > /etc/peapod/manifests/(\S+) <<'EOF'\n(.*?)\nEOF\n`)

// TestREADMEExamples runs the README's static pod examples as a user
// would right after `make run`, on an offline machine: busybox imported
// from the archive hack/run.sh makes (no registry; docker.io mirrored to a
// closed port, so a pull fails closed instead of going off the box), each
// example written to the manifests dir as the README says, each pod
// Running with its containers ready.
func TestREADMEExamples(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	examples := readmeManifest.FindAllSubmatch(readme, -1)
	if len(examples) == 0 {
		t.Fatal("no static pod example found in README.md")
	}
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://127.0.0.1:1"}})
	set, err := imagebuild.Cached(imagebuild.Options{})
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "busybox-oci.tar")
	if err := imagebuild.WriteOCIArchiveFile(archive, set.BusyboxOCI, imagebuild.ArchiveRefName); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(binDir, "peapod"), "images", "import", "--config", d.cfgPath, archive).CombinedOutput(); err != nil {
		t.Fatalf("peapod images import: %v\n%s", err, out)
	}
	for _, ex := range examples {
		file, manifest := string(ex[1]), string(ex[2])
		d.writeManifest(file, manifest)
		pods := readmePodNames.FindAllStringSubmatch(manifest, -1)
		for _, p := range pods {
			d.waitPod(p[1], 90*time.Second, "Running and ready (README example "+file+")", func(p *v1.Pod) bool {
				return p.Status.Phase == v1.PodRunning && podCondition(p, v1.ContainersReady)
			})
		}
	}
}

// readmePodNames finds the pod names of an example (metadata: {name: X}
// or a name: line under metadata).
var readmePodNames = regexp.MustCompile(`metadata: \{name: ([a-z0-9-]+)\}`)
