package hostcheck

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// capability is one Linux capability some peapod feature needs beyond
// what runs without it: its absence is a warning (pods still run), with
// what goes missing.
type capability struct {
	bit     uint
	name    string
	without string
}

var wantedCapabilities = []capability{
	{24, "CAP_SYS_RESOURCE", "a container's oom_score_adj cannot go below peapod's own, and a mounted ext4 cannot grow online " +
		"(CSI volume expansion happens at the volume's next stage instead)"},
}

// MissingCapabilities reads the effective capabilities (CapEff) from a
// /proc/<pid>/status file and lists, one line each, the wanted ones that
// are missing and what that costs.
func MissingCapabilities(statusPath string) ([]string, error) {
	f, err := os.Open(statusPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "CapEff:")
		if !ok {
			continue
		}
		eff, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: CapEff %q: %w", statusPath, strings.TrimSpace(v), err)
		}
		var out []string
		for _, c := range wantedCapabilities {
			if eff&(1<<c.bit) == 0 {
				out = append(out, fmt.Sprintf("%s missing (CapEff %s): %s", c.name, strings.TrimSpace(v), c.without))
			}
		}
		return out, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%s: no CapEff line", statusPath)
}
