"""Kubeflow Pipelines v2 components: typed signatures whose bodies make one call into `training.jobs`.
They run in the project's image (`MNIST_GAN_IMAGE`, and the CUDA variant `MNIST_GAN_GPU_IMAGE` for
training; see container_images.py), so the cluster and `kfp.local` run the same library code."""
