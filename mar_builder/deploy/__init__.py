"""Deploy side: the layout and config that KServe mounts, Kubernetes manifests, a KServe pod simulated on loopback."""
