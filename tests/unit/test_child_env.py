"""What each ComfyUI child's environment holds: its GPU, and its share of the cores in a pool."""

from app.comfy.process import child_env, usable_cores


def test_a_lone_instance_keeps_torch_s_own_thread_count() -> None:
    env = child_env({"PATH": "/bin"}, None, 1)
    assert env == {"PATH": "/bin", "PYTHONUNBUFFERED": "1"}


def test_each_instance_of_a_pool_gets_its_share_of_the_cores() -> None:
    cores = usable_cores()
    assert child_env({}, None, 2)["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    # More instances than cores: one thread each, never zero.
    assert child_env({}, None, cores + 1)["OMP_NUM_THREADS"] == "1"


def test_the_operator_s_thread_count_and_the_gpu_are_kept() -> None:
    env = child_env({"OMP_NUM_THREADS": "6"}, "2", 3)
    assert env["OMP_NUM_THREADS"] == "6"
    assert env["CUDA_VISIBLE_DEVICES"] == "2"
