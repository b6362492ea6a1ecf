"""Device mesh, shardings and host-to-device batch transfer."""
