"""The one embedded aiohttp server every API family is mounted on."""
