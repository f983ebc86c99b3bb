"""What the tests share that is not a test: `two_generators` (the `lab` fixture's tracking database),
`container_stack` (the project's images in a container engine), `kfp_api` (a recording KFP REST server),
`tracked_run` and `secrets_scan` (checks of a finished run, and of leaked credentials), `worker_calls`
(a call for the sweep's worker processes), and scripts a test runs in a fresh process, one backend each
(`adam_steps`, `one_step`, `data_parallel_runs`)."""
