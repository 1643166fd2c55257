"""gatewayctl: the technician's tool to build, flash, provision and commission a gateway
(docs/gatewayctl.md). Host-side only; nothing here runs on a gateway."""
