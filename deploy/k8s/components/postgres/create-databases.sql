-- Run once by the postgres image's entrypoint on an empty data directory: one database per
-- owner (ARCHITECTURE.md: no service reads another's database).
CREATE DATABASE experiments;
CREATE DATABASE training;
CREATE DATABASE mlflow;
