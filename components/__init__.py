"""Kubeflow Pipelines v2 components: typed signatures whose bodies make one call into
`training.pipeline_tasks`. They run in the project's image (`MNIST_GAN_IMAGE`, and the CUDA variant
`MNIST_GAN_GPU_IMAGE` for training), so the cluster and `kfp.local` run the same library code."""
