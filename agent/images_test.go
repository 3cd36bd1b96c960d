package agent

import (
	"errors"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

func waitingOf(p *v1.Pod) *v1.ContainerStateWaiting {
	if p == nil || len(p.Status.ContainerStatuses) == 0 {
		return nil
	}
	return p.Status.ContainerStatuses[0].State.Waiting
}

func TestAgentImageAndVolumeErrors(t *testing.T) {
	e := newTestEnv(t, map[string]string{
		"never.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: never}\nspec:\n  containers: [{name: c, image: 'missing:1', imagePullPolicy: Never}]\n",
		"vol.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: vol}\nspec:\n  containers: [{name: c, image: 'busybox:1.36'}]\n" +
			"  volumes: [{name: cfg, configMap: {name: cfg}}]\n",
		"empty.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: empty}\nspec:\n  containers: [{name: c, image: 'busybox:1.36', volumeMounts: [{name: scratch, mountPath: /data, subPath: sub}]}]\n" +
			"  volumes: [{name: scratch, emptyDir: {}}]\n",
	}, nil)
	waitFor(t, "ErrImageNeverPull", func() bool {
		w := waitingOf(e.pod("never"))
		return w != nil && w.Reason == "ErrImageNeverPull"
	})
	if w := waitingOf(e.pod("never")); !strings.Contains(w.Message, `"missing:1" is not present with pull policy of Never`) {
		t.Errorf("message %q", w.Message)
	}
	waitFor(t, "volumes not available", func() bool {
		p := e.pod("vol")
		w := waitingOf(p)
		return w != nil && w.Message == "volumes not available" && p.Status.Message == "volumes not available"
	})
	waitFor(t, "emptyDir pod running", func() bool { return containerRunning(e.pod("empty"), "c") })
}

func TestAgentPullFailureThenBackOff(t *testing.T) {
	e := newTestEnv(t, map[string]string{
		"latest.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: latest}\nspec:\n  containers: [{name: c, image: 'app:latest'}]\n",
	}, func(e *testEnv) {
		e.img.InjectError("PullImage", errors.New("registry down"))
		e.img.InjectError("PullImage", errors.New("registry down"))
	})
	waitFor(t, "ImagePullBackOff", func() bool {
		w := waitingOf(e.pod("latest"))
		return w != nil && w.Reason == "ImagePullBackOff"
	})
	if n := e.count("CreateContainer"); n != 0 {
		t.Errorf("CreateContainer called %d times without an image", n)
	}
}

func TestAgentPostStartFailureKillsContainer(t *testing.T) {
	e := newTestEnv(t, map[string]string{
		"hook.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: hook}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: 'busybox:1.36'\n" +
			"    lifecycle: {postStart: {exec: {command: [\"false\"]}}}\n",
	}, func(e *testEnv) {
		e.rt.InjectError("ExecSync", errors.New("exit status 1"))
	})
	waitFor(t, "container stopped", func() bool { return e.count("StopContainer") >= 1 })
	waitFor(t, "pod failed or done", func() bool {
		p := e.pod("hook")
		return p != nil && p.Status.Phase != v1.PodRunning && p.Status.Phase != v1.PodPending
	})
}
