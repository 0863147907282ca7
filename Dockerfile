# The node's own image. Build it with scripts/build_node_image.sh: nothing can be pulled here,
# so the base is the locally made node-base/python:bookworm (Python 3.11, like the host) and
# the node with its dependencies is pip-installed on the host into the build context first.
#
# Run it next to the Docker engine it manages, on the host network (managed containers publish
# on 127.0.0.1) with the engine's socket, and with build contexts at the paths the config names:
#   docker run --network host -v /var/run/docker.sock:/var/run/docker.sock \
#     -v $PWD:/srv/node -w /srv/node node-daemon:latest run --config /srv/node/config.yaml
# Without --config it works in /app and reads $INFERNET_CONFIG_PATH, else /app/config.yaml, else
# /app/config.json: an Infernet operator's compose file (config.json mounted at /app/config.json)
# runs it unchanged (deploy/infernet/docker-compose.yaml).
FROM node-base/python:bookworm
COPY site-packages /opt/node/site-packages
ENV PYTHONPATH=/opt/node/site-packages PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
EXPOSE 4000
ENTRYPOINT ["python3", "-m", "node"]
CMD ["run"]
