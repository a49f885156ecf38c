"""Integrations with other trainers (optional extras): they write the same run store and read the same control
file as our loop, so everything downstream works unchanged. `trl`: Hugging Face TRL's GRPOTrainer."""
