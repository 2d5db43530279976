"""A Spark job is validated once, for every backend, with messages naming field, value and what is allowed."""

import dataclasses
import json

import pytest

from mlplatform.spark import SparkJob, SparkJobError
from mlplatform.spark.job import is_app_id, local_main_file, new_app_id


def job(**overrides):
    return SparkJob(**{"name": "wordcount", "main_file": "wordcount.py", **overrides})


def error(**overrides) -> SparkJobError:
    with pytest.raises(SparkJobError) as info:
        job(**overrides)
    return info.value


def test_defaults_and_normalization():
    j = job(arguments=["in.txt", 10, 2.5], executor_memory=" 2G ", conf={"spark.sql.shuffle.partitions": 8,
                                                                         "spark.eventLog.enabled": True})
    assert j.to_dict() == {
        "name": "wordcount", "main_file": "wordcount.py", "arguments": ["in.txt", "10", "2.5"],
        "executors": 1, "executor_cores": 1, "executor_memory": "2g", "driver_cores": 1, "driver_memory": "1g",
        "conf": {"spark.eventLog.enabled": "true", "spark.sql.shuffle.partitions": "8"},
    }
    assert SparkJob(**json.loads(json.dumps(j.to_dict()))) == j  # a round trip through JSON (the REST API)


def test_replace_validates_again():
    with pytest.raises(SparkJobError, match="executors"):
        dataclasses.replace(job(), executors=0)


@pytest.mark.parametrize("name", ["Word_Count", "1job", "job-", "", "a" * 48, "wörd"])
def test_name_must_be_a_dns_label(name):
    e = error(name=name)
    assert e.field == "name"
    assert str(e) == (f"name: {name!r} is not a valid application name; use lowercase letters, digits and '-', "
                      "starting with a letter and ending with a letter or digit, at most 47 characters (a DNS "
                      "label, with room for the id the platform appends)")


def test_name_of_47_characters_is_fine():
    assert job(name="a" * 47).name == "a" * 47


@pytest.mark.parametrize("field,value,message", [
    ("executors", -2, "executors: -2 is too small; use a whole number of at least 1"),
    ("executors", 0, "executors: 0 is too small; use a whole number of at least 1"),
    ("executors", "2", "executors: '2' is not allowed; use a whole number of at least 1"),
    ("executors", True, "executors: True is not allowed; use a whole number of at least 1"),
    ("executor_cores", 1.5, "executor_cores: 1.5 is not allowed; use a whole number of at least 1"),
    ("driver_cores", 0, "driver_cores: 0 is too small; use a whole number of at least 1"),
])
def test_counts(field, value, message):
    e = error(**{field: value})
    assert (e.field, e.value, str(e)) == (field, value, message)


@pytest.mark.parametrize("field,value,message", [
    ("executor_memory", "2GiB", "executor_memory: '2GiB' is not a Spark memory size; use a whole number followed "
                                "by k, m, g or t, e.g. '512m' or '2g'"),
    ("executor_memory", "2Gi", "executor_memory: '2Gi' is not a Spark memory size; use a whole number followed "
                               "by k, m, g or t, e.g. '512m' or '2g' (Kubernetes' 'Gi' is not Spark's syntax: "
                               "write '2g')"),
    ("driver_memory", 2, "driver_memory: 2 is not a Spark memory size; use a whole number followed by k, m, g or "
                         "t, e.g. '512m' or '2g' (a bare number has no unit: write e.g. '2g')"),
    ("driver_memory", "1.5g", "driver_memory: '1.5g' is not a Spark memory size; use a whole number followed by "
                              "k, m, g or t, e.g. '512m' or '2g'"),
    ("driver_memory", "256m", "driver_memory: '256m' is too small; Spark needs at least '512m'"),
    ("executor_memory", "0g", "executor_memory: '0g' is too small; Spark needs at least '512m'"),
])
def test_memory(field, value, message):
    e = error(**{field: value})
    assert (e.field, str(e)) == (field, message)


@pytest.mark.parametrize("value", ["512m", "512M", "2g", "2gb", "1t", "1048576k"])
def test_memory_sizes_spark_accepts(value):
    assert job(driver_memory=value).driver_memory == value.lower()


def test_arguments():
    assert str(error(arguments="a b")) == ("arguments: 'a b' is not a list; give the arguments as a list of "
                                           "strings, e.g. ['input.txt', '--limit', '10']")
    e = error(arguments=["ok", None])
    assert (e.field, str(e)) == ("arguments[1]", "arguments[1]: None is not allowed; each argument is a string "
                                                 "(or a number)")


@pytest.mark.parametrize("conf,message", [
    ({"sql.shuffle.partitions": "8"}, "conf: 'sql.shuffle.partitions' is not a Spark property; keys start with "
                                      "'spark.', e.g. 'spark.sql.shuffle.partitions'"),
    ({"spark.executor.instances": "4"}, "conf: 'spark.executor.instances' cannot be set here: it is set by the "
                                        "field executors"),
    ({"spark.master": "yarn"}, "conf: 'spark.master' cannot be set here: it is set by the platform's backend"),
    ({"spark.driver.memory": "4g"}, "conf: 'spark.driver.memory' cannot be set here: it is set by the field "
                                    "driver_memory"),
    ({"spark.sql.shuffle.partitions": None}, "conf['spark.sql.shuffle.partitions']: None is not allowed; a value "
                                             "is a string, number or boolean"),
    (["spark.a=b"], "conf: ['spark.a=b'] is not a mapping; give Spark properties as "
                    "{'spark.sql.shuffle.partitions': '8', ...}"),
])
def test_conf(conf, message):
    assert str(error(conf=conf)) == message


ALLOWED = ("allowed: keys under spark.sql.*, spark.shuffle.*, spark.reducer.*, spark.memory.*, spark.io.compression.*, "
           "spark.broadcast.*, spark.kryo.*, spark.kryoserializer.*, spark.locality.wait*, spark.speculation*, "
           "spark.ui.*, spark.eventLog.*, spark.python.*, spark.hadoop.fs.s3a.*, spark.cleaner.*, spark.storage.*, "
           "spark.excludeOnFailure.*, and spark.checkpoint.compress, spark.default.parallelism, "
           "spark.driver.maxResultSize, spark.driver.memoryOverhead, spark.driver.memoryOverheadFactor, "
           "spark.executor.heartbeatInterval, spark.executor.memoryOverhead, spark.executor.memoryOverheadFactor, "
           "spark.executor.pyspark.memory, spark.files, spark.jars, spark.jars.excludes, spark.jars.packages, "
           "spark.jars.repositories, spark.log.level, spark.network.timeout, spark.rdd.compress, spark.serializer, "
           "spark.submit.pyFiles, spark.task.cpus, spark.task.maxFailures")


@pytest.mark.parametrize("key", [
    "spark.kubernetes.driver.volumes.hostPath.root.mount.path",  # the node's filesystem in the driver
    "spark.kubernetes.executor.volumes.hostPath.root.options.path",
    "spark.kubernetes.driver.container.image",  # an image of the user's choosing
    "spark.kubernetes.authenticate.executor.serviceAccountName",  # another identity
    "spark.kubernetes.driver.podTemplateFile",  # a whole pod (privileged, hostNetwork)
    "spark.kubernetes.node.selector.kubernetes.io/hostname",
])
def test_conf_policy_refuses_what_sets_up_pods(key):
    e = error(conf={"spark.sql.shuffle.partitions": "8", key: "/"})
    assert (e.field, e.value) == ("conf", key)
    assert str(e) == (f"conf: {key!r} is not allowed: the platform sets the pods' volumes, images, identity and "
                      f"placement; {ALLOWED}")


@pytest.mark.parametrize("key", ["spark.executorEnv.AWS_ACCESS_KEY_ID", "spark.driver.extraJavaOptions",
                                 "spark.executor.extraClassPath", "spark.dynamicAllocation.maxExecutors",
                                 "spark.authenticate", "spark.driver.host", "spark.sqlx.trick", "spark.ui"])
def test_conf_policy_is_an_allow_list(key):
    assert str(error(conf={key: "x"})) == (f"conf: {key!r} is not allowed: it is not among the Spark properties "
                                           f"users may set; {ALLOWED}")


def test_conf_policy_lets_users_tune_spark():
    conf = {"spark.sql.shuffle.partitions": 64, "spark.sql.adaptive.enabled": True, "spark.default.parallelism": 16,
            "spark.executor.memoryOverhead": "1g", "spark.driver.maxResultSize": "2g",
            "spark.serializer": "org.apache.spark.serializer.KryoSerializer", "spark.kryoserializer.buffer.max": "256m",
            "spark.shuffle.compress": "true", "spark.memory.fraction": 0.7, "spark.network.timeout": "300s",
            "spark.speculation": True, "spark.ui.enabled": False, "spark.eventLog.enabled": True,
            "spark.hadoop.fs.s3a.path.style.access": "true", "spark.jars.packages": "io.delta:delta-spark_2.13:4.0.0",
            "spark.submit.pyFiles": "s3a://platform/teams/team-vision/lib.zip", "spark.python.worker.reuse": "true"}
    assert job(conf=conf).conf == {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in sorted(conf.items())}


@pytest.mark.parametrize("main_file,message", [
    ("", "main_file: '' is not allowed; give the path or URI of the application's .py file"),
    ("job.jar", "main_file: 'job.jar' is not a Python file; the platform runs PySpark applications from a .py file"),
    (None, "main_file: None is not allowed; give the path or URI of the application's .py file"),
])
def test_main_file(main_file, message):
    assert str(error(main_file=main_file)) == message


def test_app_ids_are_unique_dns_labels():
    ids = {new_app_id("wordcount") for _ in range(2000)}
    assert len(ids) == 2000
    assert all(is_app_id(i) and i.startswith("wordcount-") and len(i) == len("wordcount-") + 8 for i in ids)
    assert len(new_app_id("a" * 47)) == 56
    assert not is_app_id("../../etc") and not is_app_id("A-1")


def test_local_main_file(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "wc.py").write_text("print(1)\n")
    assert local_main_file("jobs/wc.py", tmp_path) == tmp_path / "jobs" / "wc.py"
    assert local_main_file(f"file://{tmp_path}/jobs/wc.py", "/") == tmp_path / "jobs" / "wc.py"
    with pytest.raises(SparkJobError) as info:
        local_main_file("jobs/missing.py", tmp_path)
    assert str(info.value) == (f"main_file: 'jobs/missing.py' does not exist (looked for {tmp_path}/jobs/missing.py); "
                               "give the path of an existing .py file, relative to the notebook's folder or absolute")
    with pytest.raises(SparkJobError, match=r"is a s3a:// URI; the local backend runs a file of this machine"):
        local_main_file("s3a://platform/wc.py", tmp_path)
