"""Run by test_ship_fleet (a process of its own: Spark's JVM): read the shipped layout at
argv[1] with pyspark in local mode and print, per host, the connection rows and distinct
cookies. The settings are the README's: nanosecond timestamps read as longs."""

import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

spark = (SparkSession.builder.master("local[1]").appName("tcpsnap-fleet")
         .config("spark.ui.enabled", "false")
         .config("spark.sql.legacy.parquet.nanosAsLong", "true")
         .config("spark.sql.session.timeZone", "UTC")
         # the vectorized reader cannot decode unsigned 64-bit columns (cookie, inode) in
         # the encodings tcpsnap writes; the row reader can
         .config("spark.sql.parquet.enableVectorizedReader", "false")
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
df = spark.read.parquet(sys.argv[1])
print(df.dtypes, file=sys.stderr)
rows = (df.where(F.col("kind") == "connection").groupBy("host")
        .agg(F.count("*").alias("n"), F.countDistinct("cookie").alias("d")).collect())
for r in sorted(rows):
    print(r["host"], r["n"], r["d"])
spark.stop()
