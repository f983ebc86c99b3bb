"""What the tests share that is not a test: `two_generators` (the `lab` fixture's tracking database),
`container_stack` (the project's images in a container engine), `kfp_api` and `kube_api` (recording
stand-ins for the KFP REST API and for the Kubernetes API with KServe, on `recording_server`),
`tracked_run` and `secrets_scan` (checks of a finished run, and of leaked credentials), `worker_calls`
(a call for the sweep's worker processes), `process_state` (what a test must leave as it found it, and
MLflow pointed at a store for one block), `leaky_tests` (tests that break that, run by test_isolation),
and scripts a test runs in a fresh process, one backend each (`adam_steps`, `one_step`,
`data_parallel_runs`)."""
