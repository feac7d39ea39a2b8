"""bot: the discord.py front end of famswap."""
