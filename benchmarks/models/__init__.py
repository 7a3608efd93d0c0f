"""Project-written models (CPU-sized nets, SimVP, U-Net, ...); timm supplies the standard architectures."""
