// Command cni-failpoint is a CNI plugin for tests: it runs the real plugin
// given as "delegate" in its config and fails ADD, DEL or CHECK when the
// pod's control file says so. See package peapod/sandbox/network/failpoint.
//
//	{"type": "cni-failpoint", "controlDir": "/tmp/fp",
//	 "delegate": {"type": "bridge", "bridge": "cni0", "ipam": {...}}}
//
// The delegate gets the outer config's name, cniVersion, prevResult and
// runtimeConfig unless it sets its own; it is found in CNI_PATH.
package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"peapod/sandbox/network/failpoint"
)

type netConf struct {
	types.PluginConf
	ControlDir string         `json:"controlDir"`
	Delegate   map[string]any `json:"delegate"`
}

type podArgs struct {
	types.CommonArgs
	K8S_POD_NAME types.UnmarshallableString //nolint:revive // the CNI_ARGS key
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck},
		version.All, "cni-failpoint: delegates to a real plugin, fails on demand (tests only)")
}

// load parses the config and builds the delegate's.
func load(args *skel.CmdArgs) (*netConf, string, []byte, error) {
	var c netConf
	if err := json.Unmarshal(args.StdinData, &c); err != nil {
		return nil, "", nil, fmt.Errorf("cni-failpoint config: %w", err)
	}
	if c.Delegate == nil {
		return nil, "", nil, fmt.Errorf("cni-failpoint config: no delegate")
	}
	var raw map[string]any
	_ = json.Unmarshal(args.StdinData, &raw)
	d := c.Delegate
	for _, k := range []string{"name", "cniVersion", "prevResult", "runtimeConfig"} {
		if _, ok := d[k]; !ok && raw[k] != nil {
			d[k] = raw[k]
		}
	}
	typ, _ := d["type"].(string)
	if typ == "" {
		return nil, "", nil, fmt.Errorf("cni-failpoint config: delegate has no type")
	}
	b, err := json.Marshal(d)
	return &c, typ, b, err
}

func check(c *netConf, args *skel.CmdArgs, cmd string) error {
	if c.ControlDir == "" {
		return nil
	}
	var pa podArgs
	_ = types.LoadArgs(args.Args, &pa)
	fail, err := failpoint.Evaluate(c.ControlDir, []string{string(pa.K8S_POD_NAME), args.ContainerID}, cmd)
	if err != nil {
		return err
	}
	if fail != "" {
		return types.NewError(types.ErrInternal, "failpoint "+cmd+": "+fail, "")
	}
	return nil
}

func cmdAdd(args *skel.CmdArgs) error {
	c, typ, conf, err := load(args)
	if err != nil {
		return err
	}
	res, err := invoke.DelegateAdd(context.TODO(), typ, conf, nil)
	if err != nil {
		return err
	}
	// After the delegate: the interface and IP exist, the caller must undo.
	if err := check(c, args, "ADD"); err != nil {
		return err
	}
	return types.PrintResult(res, c.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error {
	c, typ, conf, err := load(args)
	if err != nil {
		return err
	}
	if err := check(c, args, "DEL"); err != nil {
		return err
	}
	return invoke.DelegateDel(context.TODO(), typ, conf, nil)
}

func cmdCheck(args *skel.CmdArgs) error {
	c, typ, conf, err := load(args)
	if err != nil {
		return err
	}
	if err := check(c, args, "CHECK"); err != nil {
		return err
	}
	return invoke.DelegateCheck(context.TODO(), typ, conf, nil)
}
