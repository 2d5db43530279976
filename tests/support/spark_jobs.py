"""PySpark jobs the tests and the benches submit (as a notebook's .py main file; dedent before writing)."""

WORDCOUNT = """
    import sys
    from pyspark.sql import SparkSession

    source, target = sys.argv[1], sys.argv[2]
    spark = SparkSession.builder.getOrCreate()
    words = spark.sparkContext.textFile(source).flatMap(str.split)
    counts = words.map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b)
    counts.map(lambda kv: f"{kv[0]}\\t{kv[1]}").saveAsTextFile(target)
    print("distinct words:", counts.count())
    spark.stop()
"""
