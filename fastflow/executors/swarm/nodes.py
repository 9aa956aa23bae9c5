"""The runner image on every Swarm node, without a registry: `push_image_to_nodes`.

Swarm does not copy images between nodes; a node without the image rejects the task (the run
fails with "not on Swarm node ..."). With no registry, the image is streamed from this engine
(`docker save`) into each node's engine (`docker load`) through their APIs: the engines are
named by URL (`tcp://10.0.0.2:2376` with TLS from the standard DOCKER_* settings, `ssh://...`,
`unix:///...`), since Swarm does not tell where a node's API listens. With a registry, name the
image there in `image` of config.yaml instead: every node pulls it, nothing to push.
"""
from __future__ import annotations

from dataclasses import dataclass

import docker
import docker.errors

from fastflow.errors import ExecutorError
from fastflow.executors.docker.engine import DockerError, connect


@dataclass(frozen=True)
class PushedImage:
    """One image on one engine: already there (same id), or loaded now."""

    engine: str
    node: str
    image: str
    image_id: str
    loaded: bool


def push_image_to_nodes(images: list[str], engines: list[str],
                        client: docker.DockerClient | None = None,
                        connect_to=None) -> list[PushedImage]:
    """Make each of `images` (present on this engine) present on each engine of `engines`,
    with the same image id; an engine that has it already is left alone. `ExecutorError`
    naming the engine when one cannot be reached or refuses the image."""
    source = connect(client)
    connect_to = connect_to or (lambda url: connect(base_url=url))
    ids = {}
    for image in images:
        try:
            ids[image] = source.api.inspect_image(image)["Id"]
        except docker.errors.ImageNotFound:
            raise ExecutorError(f"the image {image!r} is not on this engine; build it first "
                                "with `fastflow image build --bootstrap`") from None
    done = []
    for url in engines:
        try:
            target = connect_to(url)
            node = target.api.info().get("Name") or url
        except (DockerError, ExecutorError, Exception) as exc:  # EngineUnavailable says how
            raise ExecutorError(f"cannot reach the Docker engine at {url}: {exc}") from exc
        for image, image_id in ids.items():
            try:
                there = target.api.inspect_image(image)["Id"]
            except docker.errors.ImageNotFound:
                there = None
            if there == image_id:
                done.append(PushedImage(url, node, image, image_id, False))
                continue
            try:
                target.api.load_image(source.api.get_image(image, chunk_size=1024 * 1024))
                loaded = target.api.inspect_image(image)["Id"]
            except DockerError as exc:
                raise ExecutorError(f"the engine at {url} could not load {image!r}: {exc}") from exc
            if loaded != image_id:
                raise ExecutorError(f"the engine at {url} holds {image!r} as {loaded}, not "
                                    f"{image_id} after loading it")
            done.append(PushedImage(url, node, image, image_id, True))
    return done
