"""The container images the components run in: one setting each, read from the environment at compile time."""

import os

IMAGE = os.environ.get("MNIST_GAN_IMAGE", "ghcr.io/mnist-gan/mnist-gan:0.1.0")
GPU_IMAGE = os.environ.get("MNIST_GAN_GPU_IMAGE", f"{IMAGE}-cuda")
