"""Medical data in: built-in and user data sets (TFDS, built offline) and their pipelines."""
