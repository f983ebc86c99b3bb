"""The MNIST GAN library: training, evaluation, the registry and serving. A logged generator carries this
package as its code, so no file in it may be empty: KServe's S3 downloader skips zero-byte objects."""
