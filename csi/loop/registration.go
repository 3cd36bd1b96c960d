package loop

import (
	"context"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// registrationServer is what the node-driver-registrar sidecar serves for a
// driver: the kubelet's plugin watcher finds the socket in its
// plugins_registry dir, asks GetInfo, then connects to the CSI endpoint and
// reports the outcome through NotifyRegistrationStatus.
type registrationServer struct {
	registerapi.UnimplementedRegistrationServer
	endpoint string
}

func registerPluginRegistration(s *grpc.Server, csiSocket string) {
	registerapi.RegisterRegistrationServer(s, &registrationServer{endpoint: csiSocket})
}

func (r *registrationServer) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              DriverName,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registrationServer) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.PluginRegistered {
		klog.InfoS("Registered with the kubelet", "driver", DriverName)
	} else {
		klog.ErrorS(nil, "The kubelet refused the registration", "driver", DriverName, "error", st.Error)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}
