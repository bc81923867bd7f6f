"""Training EELBERT: the token store (tokenize once, on disk) and masked-LM pretraining with the Trainer."""
