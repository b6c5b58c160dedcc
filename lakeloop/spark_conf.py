"""The Spark conf a job needs before its JVM starts (the s3a connector's jars for an S3 lake), given by the DAG to
spark-submit and by Python processes to their first session; light enough for DAG parsing (no pyspark import)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from lakeloop.config import PROJECT_DIR

if TYPE_CHECKING:
    from lakeloop.lake import Lake

S3A_JARS_DIR = PROJECT_DIR / "jvm" / "lib" / "spark"
S3A_CONNECTOR_JAR = "hadoop-aws-*.jar"


def spark_submit_conf(lake: Lake | str, jars_dir: Path = S3A_JARS_DIR) -> dict[str, str]:
    """The Spark conf a job needs to reach `lake`, for the spark-submit that starts it (`--conf`) or the first
    session of a Python process: for an S3 lake whose Spark lacks the s3a connector, `spark.jars` listing the jars
    `make setup` resolved into `jars_dir`; nothing otherwise.

    It must be given before the driver JVM starts: a jar added to a running driver reaches the executors' tasks,
    not the driver's own Hadoop file systems, which list and commit the lake's files. The s3a settings themselves
    (endpoint, credentials) are set later, on the session, by `use_lake`, so no secret lands on a command line."""
    url = lake if isinstance(lake, str) else lake.url
    if not url.startswith(("s3://", "s3a://")) or _spark_ships_s3a():
        return {}
    jars = sorted(jars_dir.glob("*.jar"))
    if not any(jar.match(S3A_CONNECTOR_JAR) for jar in jars):
        raise FileNotFoundError(f"the lake {url} is on S3, which Spark reaches through Hadoop's s3a connector, "
                                f"but {jars_dir} holds no {S3A_CONNECTOR_JAR}: run `make setup` (it resolves "
                                "jvm/spark/pom.xml with Maven and Java 17), or put hadoop-aws and the AWS SDK "
                                "bundle among Spark's jars")
    return {"spark.jars": ",".join(str(jar) for jar in jars)}


def _spark_ships_s3a() -> bool:
    """Whether Spark's own jars hold the s3a connector already (the project image adds it there)."""
    spec = importlib.util.find_spec("pyspark")  # found, not imported: the DAG asks at parse time
    return bool(spec and spec.origin) and any((Path(spec.origin).parent / "jars").glob(S3A_CONNECTOR_JAR))
