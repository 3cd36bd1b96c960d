package csiplugin

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Driver is a registered CSI driver: what its node service said about
// itself at registration, and clients on its endpoint.
type Driver struct {
	Name     string
	Endpoint string // the CSI socket path
	// NodeID, MaxVolumes and Topology are NodeGetInfo's answer.
	NodeID     string
	MaxVolumes int64
	Topology   map[string]string
	// Node service capabilities (NodeGetCapabilities).
	StageUnstage          bool
	VolumeStats           bool
	SingleNodeMultiWriter bool
	ExpandVolume          bool // NodeExpandVolume grows the filesystem
	// ControllerPublish: the same endpoint serves the controller service
	// with PUBLISH_UNPUBLISH_VOLUME (ControllerGetCapabilities), so a node
	// without an attacher (static pods) can attach through it.
	ControllerPublish bool

	Node       csi.NodeClient
	Controller csi.ControllerClient

	conn     *grpc.ClientConn
	regSock  string // the registration socket it came from
	regInode uint64
}

// callTimeout bounds the calls made at registration.
const callTimeout = 10 * time.Second

// connect dials endpoint and asks the node service about itself, as the
// kubelet's CSI plugin does in RegisterPlugin (NodeGetInfo), plus the
// capabilities peapod needs for every volume afterwards.
func connect(ctx context.Context, name, endpoint string) (*Driver, error) {
	conn, err := grpc.NewClient("unix://"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("driver %s: endpoint %s: %w", name, endpoint, err)
	}
	d := &Driver{Name: name, Endpoint: endpoint, conn: conn, Node: csi.NewNodeClient(conn), Controller: csi.NewControllerClient(conn)}
	if err := d.probe(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return d, nil
}

func (d *Driver) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	info, err := d.Node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		return fmt.Errorf("driver %s: NodeGetInfo: %w", d.Name, err)
	}
	if info.GetNodeId() == "" {
		return fmt.Errorf("driver %s: NodeGetInfo: empty node_id", d.Name)
	}
	d.NodeID, d.MaxVolumes = info.GetNodeId(), info.GetMaxVolumesPerNode()
	d.Topology = info.GetAccessibleTopology().GetSegments()

	caps, err := d.Node.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		return fmt.Errorf("driver %s: NodeGetCapabilities: %w", d.Name, err)
	}
	for _, c := range caps.GetCapabilities() {
		switch c.GetRpc().GetType() {
		case csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME:
			d.StageUnstage = true
		case csi.NodeServiceCapability_RPC_GET_VOLUME_STATS:
			d.VolumeStats = true
		case csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER:
			d.SingleNodeMultiWriter = true
		case csi.NodeServiceCapability_RPC_EXPAND_VOLUME:
			d.ExpandVolume = true
		}
	}

	// Most node plugins serve no controller service: Unimplemented (or
	// any failure) means no attach through this endpoint.
	cc, err := d.Controller.ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
	switch status.Code(err) {
	case codes.OK:
		for _, c := range cc.GetCapabilities() {
			if c.GetRpc().GetType() == csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME {
				d.ControllerPublish = true
			}
		}
	case codes.Unimplemented:
	default:
		return fmt.Errorf("driver %s: ControllerGetCapabilities: %w", d.Name, err)
	}
	return nil
}

// Close closes the connection to the driver.
func (d *Driver) Close() error { return d.conn.Close() }

// supportedVersion: the kubelet's CSI plugin handler accepts a driver that
// supports any CSI 1.x version ("1.0.0", "v1.2.0").
func supportedVersion(versions []string) bool {
	for _, v := range versions {
		v = strings.TrimPrefix(v, "v")
		if v == "1" || strings.HasPrefix(v, "1.") {
			return true
		}
	}
	return false
}

// endpointPath turns GetInfo's endpoint (a path, unix:///path, unix:path)
// into a socket path; an empty one is the registration socket itself.
func endpointPath(ep, regSock string) (string, error) {
	if ep == "" {
		return regSock, nil
	}
	p := ep
	if rest, ok := strings.CutPrefix(ep, "unix://"); ok {
		p = rest
	} else if rest, ok := strings.CutPrefix(ep, "unix:"); ok {
		p = rest
	}
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("endpoint %q: want an absolute unix socket path", ep)
	}
	return p, nil
}
