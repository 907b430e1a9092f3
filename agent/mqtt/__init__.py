"""MQTT: the link to the brokers and the commands that come down it."""
