package cri

import (
	"encoding/json"
	"fmt"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// HostProblem is one reason the node cannot run containers: a host check
// that failed at start (conmon missing or too old, no overlay upper dirs
// under the root dir, cgroup controllers missing) or the default runtime
// handler unusable. Message says what is wrong, where, and the fix.
type HostProblem struct {
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// runtimeReady is RuntimeReady: true without problems; else false with
// the first problem's reason and every problem's message, so an operator
// who fixes one sees the next in the same `crictl info` (and the kubelet's
// NotReady message).
func runtimeReady(problems []HostProblem) *runtimeapi.RuntimeCondition {
	c := &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: true}
	if len(problems) == 0 {
		return c
	}
	c.Status, c.Reason, c.Message = false, problems[0].Reason, problems[0].Message
	if len(problems) > 1 {
		// Messages hold "; " themselves: number them.
		msgs := make([]string, len(problems))
		for i, p := range problems {
			msgs[i] = fmt.Sprintf("(%d) %s", i+1, p.Message)
		}
		c.Message = fmt.Sprintf("%d problems: %s", len(problems), strings.Join(msgs, " "))
	}
	return c
}

// hostProblemsInfo is Status's verbose "hostProblems" entry, a JSON list.
func hostProblemsInfo(problems []HostProblem) string {
	b, _ := json.Marshal(problems)
	return string(b)
}
