"""The benchmark harness behind `manage.py bench`: a throwaway database, generated data, timed runs."""
