"""Projected discriminator (StyleGAN-XL / Projected GAN): frozen pretrained feature networks
(EfficientNet-lite, DeiT), the random CCM/CSM projector and the multi-scale mini discriminators."""
