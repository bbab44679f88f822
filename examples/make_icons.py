"""Draws the example manifest's icons (examples/icons/): a bell on a solid square, and
a maskable variant with the bell inside the safe zone (the centre 80%). Run it again
after changing the colours: python examples/make_icons.py"""

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent / "icons"
BACKGROUND = (37, 99, 235)  # blue
BELL = (255, 255, 255)


def draw(size: int, scale: float) -> Image.Image:
    """A bell ``scale`` of the icon's side wide, centred on a square background."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    pen = ImageDraw.Draw(image)
    side = size * scale
    left, top = (size - side) / 2, (size - side) / 2
    # The dome, the body flaring to the rim, and the clapper below it.
    pen.ellipse([left + side * 0.25, top + side * 0.10, left + side * 0.75, top + side * 0.60],
                fill=BELL)
    pen.polygon([(left + side * 0.25, top + side * 0.35), (left + side * 0.75, top + side * 0.35),
                 (left + side * 0.90, top + side * 0.75), (left + side * 0.10, top + side * 0.75)],
                fill=BELL)
    pen.ellipse([left + side * 0.42, top + side * 0.72, left + side * 0.58, top + side * 0.88],
                fill=BELL)
    return image


if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    draw(192, 0.8).save(HERE / "icon-192.png", optimize=True)
    draw(512, 0.8).save(HERE / "icon-512.png", optimize=True)
    draw(512, 0.6).save(HERE / "icon-512-maskable.png", optimize=True)
