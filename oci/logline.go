package oci

import (
	"bytes"
	"fmt"
	"time"
)

// LogLine is one line of the CRI container log format that conmon writes
// (k8s-file): "<RFC3339Nano> <stdout|stderr> <P|F> <message>".
type LogLine struct {
	Time    time.Time
	Stream  string // "stdout" or "stderr"
	Partial bool   // "P": the message continues on the next line of the same stream
	Message []byte
}

// ParseLogLine parses one log line (without its trailing newline).
func ParseLogLine(line []byte) (LogLine, error) {
	var l LogLine
	fields := bytes.SplitN(line, []byte{' '}, 4)
	if len(fields) < 3 {
		return l, fmt.Errorf("cri log line %q: want \"<time> <stream> <tag> <message>\"", line)
	}
	t, err := time.Parse(time.RFC3339Nano, string(fields[0]))
	if err != nil {
		return l, fmt.Errorf("cri log line %q: time: %w", line, err)
	}
	l.Time = t
	switch s := string(fields[1]); s {
	case "stdout", "stderr":
		l.Stream = s
	default:
		return l, fmt.Errorf("cri log line %q: stream %q", line, s)
	}
	switch string(fields[2]) {
	case "F":
	case "P":
		l.Partial = true
	default:
		return l, fmt.Errorf("cri log line %q: tag %q", line, fields[2])
	}
	if len(fields) == 4 {
		l.Message = fields[3]
	}
	return l, nil
}
