// Package procfs parses the /proc files more than one part of peapod
// reads (node status and the kubelet API's stats both read meminfo).
package procfs

import (
	"strconv"
	"strings"
)

// ParseMeminfo reads /proc/meminfo into bytes per field ("MemTotal",
// "Inactive(file)", ...). Fields without the kB unit (HugePages_Total) are
// counts and are kept as they are; lines that do not parse are skipped.
func ParseMeminfo(data []byte) map[string]uint64 {
	out := map[string]uint64{}
	for line := range strings.Lines(string(data)) {
		k, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == "kB" {
			v *= 1024
		}
		out[strings.TrimSpace(k)] = v
	}
	return out
}
