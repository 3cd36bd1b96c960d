package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func running(name string) func(p *v1.Pod) bool {
	return func(p *v1.Pod) bool {
		cs := containerStatus(p, name)
		return cs != nil && cs.State.Running != nil
	}
}

// execIn runs cmd in an agent pod's container through the CRI.
func (d *daemon) execIn(p *v1.Pod, container string, cmd ...string) string {
	d.t.Helper()
	cs := containerStatus(p, container)
	if cs == nil {
		d.t.Fatalf("no container %s in %s", container, p.Name)
	}
	return execOut(d.t, d, strings.TrimPrefix(cs.ContainerID, "peapod://"), cmd...)
}

func loopDevicesFor(image string) string {
	out, _ := exec.Command("losetup", "-j", image).CombinedOutput()
	return strings.TrimSpace(string(out))
}

// TestAgentVolumes: each volume type in real containers. The WAR-file
// sidecar pattern through an emptyDir; configMap, secret and downwardAPI
// files, with a ConfigMap change seen inside the running container; a
// hostPath; and a PVC on the built-in peapod/loop FlexVolume driver whose
// data, written by one pod, is read by a second pod after the first was
// deleted, with no loop device or mount left behind.
func TestAgentVolumes(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := exec.Command("truncate", "-s", "64M", disk).Run(); err != nil {
		t.Fatal(err)
	}
	// Registered before the daemon, so it runs after the daemon's cleanup.
	t.Cleanup(func() {
		// Only if a failure left it: detach the loop device of our image.
		for _, line := range strings.Split(loopDevicesFor(disk), "\n") {
			if dev, _, ok := strings.Cut(line, ":"); ok {
				t.Errorf("loop device %s left attached", dev)
				exec.Command("losetup", "-d", dev).Run()
			}
		}
	})
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	hostDir := filepath.Join(d.dir, "hostpath-data")

	d.writeManifest("objects.yaml", `
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: hello-v1
---
apiVersion: v1
kind: Secret
metadata:
  name: token
stringData:
  token: s3cret
`)
	d.writeManifest("app.yaml", fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata:
  name: app
  labels:
    tier: web
spec:
  initContainers:
  - name: fetch-war
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo sample-war-contents > /deploy/app.war"]
    volumeMounts:
    - name: webapps
      mountPath: /deploy
  containers:
  - name: server
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["httpd", "-f", "-p", "8080", "-h", "/srv"]
    volumeMounts:
    - name: webapps
      mountPath: /srv
    - name: config
      mountPath: /etc/config
    - name: secret
      mountPath: /etc/secret
    - name: podinfo
      mountPath: /etc/podinfo
    - name: host
      mountPath: /host
    - name: scratch
      mountPath: /scratch
  volumes:
  - name: webapps
    emptyDir: {}
  - name: scratch
    emptyDir:
      medium: Memory
      sizeLimit: 8Mi
  - name: config
    configMap:
      name: settings
  - name: secret
    secret:
      secretName: token
  - name: podinfo
    downwardAPI:
      items:
      - path: labels
        fieldRef:
          fieldPath: metadata.labels
      - path: name
        fieldRef:
          fieldPath: metadata.name
  - name: host
    hostPath:
      path: %s
      type: DirectoryOrCreate
`, hostDir))
	p := d.waitPod("app", 90*time.Second, "server running", running("server"))

	// The sidecar pattern: the init container's file is served by the main one.
	resp, err := http.Get("http://" + p.Status.PodIP + ":8080/app.war")
	if err != nil {
		t.Fatalf("GET app.war from the pod: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(body)) != "sample-war-contents" {
		t.Errorf("served %q", body)
	}
	if got := d.execIn(p, "server", "cat", "/etc/config/greeting"); got != "hello-v1" {
		t.Errorf("configMap file = %q", got)
	}
	if got := d.execIn(p, "server", "cat", "/etc/secret/token"); got != "s3cret" {
		t.Errorf("secret file = %q", got)
	}
	if got := d.execIn(p, "server", "cat", "/etc/podinfo/name"); got != "app" {
		t.Errorf("downwardAPI name = %q", got)
	}
	if got := d.execIn(p, "server", "cat", "/etc/podinfo/labels"); !strings.Contains(got, `tier="web"`) {
		t.Errorf("downwardAPI labels = %q", got)
	}
	if got := d.execIn(p, "server", "sh", "-c", "grep ' /scratch ' /proc/mounts"); !strings.Contains(got, "tmpfs") {
		t.Errorf("memory emptyDir is not a tmpfs: %q", got)
	}
	d.execIn(p, "server", "sh", "-c", "echo from-pod > /host/f")
	if data, _ := os.ReadFile(filepath.Join(hostDir, "f")); string(data) != "from-pod\n" {
		t.Errorf("hostPath write not on the host: %q", data)
	}

	// A ConfigMap change reaches the running container, in place.
	d.writeManifest("objects.yaml", `
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: hello-v2
---
apiVersion: v1
kind: Secret
metadata:
  name: token
stringData:
  token: s3cret
`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := d.execIn(p, "server", "cat", "/etc/config/greeting")
		if got == "hello-v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("configMap change not seen in the container: %q", got)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if cs := containerStatus(d.waitPod("app", 5*time.Second, "listed", running("server")), "server"); cs.RestartCount != 0 {
		t.Errorf("the configMap change restarted the container")
	}

	// PVC on peapod/loop: pod A writes, is deleted; pod B reads it back.
	d.writeManifest("storage.yaml", fmt.Sprintf(`
apiVersion: v1
kind: PersistentVolume
metadata:
  name: disk
spec:
  capacity:
    storage: 64Mi
  accessModes: ["ReadWriteOnce"]
  storageClassName: loop
  flexVolume:
    driver: peapod/loop
    fsType: ext4
    options:
      image: %s
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: ["ReadWriteOnce"]
  storageClassName: loop
  resources:
    requests:
      storage: 32Mi
`, disk))
	pvcPod := `
apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "%s; exec sleep 600"]
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: data
`
	d.writeManifest("writer.yaml", fmt.Sprintf(pvcPod, "writer", "echo persisted > /data/file"))
	pa := d.waitPod("writer", 90*time.Second, "running", running("main"))
	if got := d.execIn(pa, "main", "cat", "/data/file"); got != "persisted\n" {
		t.Fatalf("writer sees %q", got)
	}
	if loopDevicesFor(disk) == "" {
		t.Errorf("no loop device attached for the PVC")
	}
	os.Remove(filepath.Join(d.dir, "manifests", "writer.yaml"))
	deadline = time.Now().Add(60 * time.Second)
	for loopDevicesFor(disk) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("loop device still attached after the writer pod was deleted: %s", loopDevicesFor(disk))
		}
		time.Sleep(250 * time.Millisecond)
	}
	d.writeManifest("reader.yaml", fmt.Sprintf(pvcPod, "reader", "true"))
	pb := d.waitPod("reader", 90*time.Second, "running", running("main"))
	if got := d.execIn(pb, "main", "cat", "/data/file"); got != "persisted\n" {
		t.Errorf("reader sees %q, want what the deleted writer wrote", got)
	}

	// Everything goes when the pods go: no loop device, no volume mount.
	for _, f := range []string{"reader.yaml", "app.yaml"} {
		os.Remove(filepath.Join(d.dir, "manifests", f))
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		pods, _ := d.rt.ListPodSandbox(d.ctx(), &runtimeapi.ListPodSandboxRequest{})
		mounts, _ := os.ReadFile("/proc/self/mounts")
		if len(pods.Items) == 0 && loopDevicesFor(disk) == "" && !strings.Contains(string(mounts), filepath.Join(d.dir, "root", "pods")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left after the pods were deleted: %d pods, loop %q, mounts under pods/: %v", len(pods.Items), loopDevicesFor(disk), strings.Contains(string(mounts), filepath.Join(d.dir, "root", "pods")))
		}
		time.Sleep(250 * time.Millisecond)
	}
}
