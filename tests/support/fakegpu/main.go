// Command fakegpu is a kubelet device plugin (DevicePlugin API v1beta1) that advertises fake
// nvidia.com/gpu devices and answers Allocate like NVIDIA's plugin: NVIDIA_VISIBLE_DEVICES and
// CUDA_VISIBLE_DEVICES list the allocated device IDs. There is no hardware behind them: it lets a real
// kubelet schedule and account GPUs on a machine without one.
//
// The kubelet deletes every socket in its device-plugins directory when it starts, so the plugin
// watches its own socket and, when it disappears, serves again and re-registers.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	ids []string
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch sends the device list once; devices never change health, so the stream just stays open.
func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	devices := make([]*pluginapi.Device, 0, len(p.ids))
	for _, id := range p.ids {
		devices = append(devices, &pluginapi.Device{ID: id, Health: pluginapi.Healthy})
	}
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devices}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		visible := strings.Join(c.DevicesIds, ",")
		log.Printf("allocate %s", visible)
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": visible, "CUDA_VISIBLE_DEVICES": visible},
		})
	}
	return resp, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// serve listens on socket and registers with the kubelet; returns the server to stop later.
func serve(p *plugin, dir, socketName, resource string) (*grpc.Server, error) {
	socket := filepath.Join(dir, socketName)
	_ = os.Remove(socket)
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "kubelet.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version: pluginapi.Version, Endpoint: socketName, ResourceName: resource,
	})
	if err != nil {
		srv.Stop()
		return nil, fmt.Errorf("register with the kubelet: %w", err)
	}
	log.Printf("registered %s (%d devices) at %s", resource, len(p.ids), socket)
	return srv, nil
}

func main() {
	dir := flag.String("dir", pluginapi.DevicePluginPath, "the kubelet's device-plugins directory")
	socketName := flag.String("socket", "ocrjob-fakegpu.sock", "socket file name inside -dir")
	resource := flag.String("resource", "nvidia.com/gpu", "extended resource name")
	ids := flag.String("ids", "", "comma-separated device IDs to advertise (GPU-<uuid>,...)")
	flag.Parse()
	p := &plugin{ids: strings.Split(*ids, ",")}
	if *ids == "" {
		log.Fatal("-ids is required")
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	socket := filepath.Join(*dir, *socketName)
	var srv *grpc.Server
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		if srv != nil {
			if _, err := os.Stat(socket); err != nil { // the kubelet restarted and wiped the directory
				log.Printf("socket %s gone: serving again", socket)
				srv.Stop()
				srv = nil
			}
		}
		if srv == nil {
			var err error
			if srv, err = serve(p, *dir, *socketName, *resource); err != nil {
				log.Printf("not registered yet: %v", err) // kubelet not up yet: retry on the next tick
			}
		}
		select {
		case <-stop:
			if srv != nil {
				srv.Stop()
			}
			_ = os.Remove(socket)
			return
		case <-tick.C:
		}
	}
}
