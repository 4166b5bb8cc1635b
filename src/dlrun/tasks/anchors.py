"""The book's bounding-box machinery (13.3-13.4): box formats, anchors, anchor labelling, offsets, NMS.

Boxes are (x1, y1, x2, y2) corners in [0, 1] image fractions unless said. Ground-truth labels are a padded
(batch, max_objects, 5) tensor of (class, x1, y1, x2, y2) rows; padding rows have class -1.
"""

import torch
from torch import Tensor
from torchvision import ops


def box_corner_to_center(boxes: Tensor) -> Tensor:
    return ops.box_convert(boxes, "xyxy", "cxcywh")


def box_center_to_corner(boxes: Tensor) -> Tensor:
    return ops.box_convert(boxes, "cxcywh", "xyxy")


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """(n, m) intersection over union of two lists of corner boxes."""
    return ops.box_iou(boxes1, boxes2)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Indices of the boxes kept, highest score first."""
    return ops.nms(boxes.float(), scores.float(), iou_threshold)


def multibox_prior(height: int, width: int, sizes, ratios, device=None) -> Tensor:
    """The book's anchors: (1, height*width*(n+m-1), 4), centred on each pixel, sizes s_i with ratio r_1 and
    size s_1 with ratios r_2..r_m; width s*sqrt(r)*H/W and height s/sqrt(r) as image fractions."""
    sizes = torch.as_tensor(sizes, dtype=torch.float32, device=device)
    ratios = torch.as_tensor(ratios, dtype=torch.float32, device=device)
    center_h = (torch.arange(height, device=device) + 0.5) / height
    center_w = (torch.arange(width, device=device) + 0.5) / width
    shift_y, shift_x = torch.meshgrid(center_h, center_w, indexing="ij")
    shift_y, shift_x = shift_y.reshape(-1), shift_x.reshape(-1)
    w = torch.cat((sizes * ratios[0].sqrt(), sizes[0] * ratios[1:].sqrt())) * height / width
    h = torch.cat((sizes / ratios[0].sqrt(), sizes[0] / ratios[1:].sqrt()))
    half = torch.stack((-w, -h, w, h)).T / 2  # (boxes per pixel, 4)
    grid = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=1)  # (pixels, 4)
    return (grid[:, None, :] + half[None, :, :]).reshape(1, -1, 4)


def assign_anchor_to_bbox(ground_truth: Tensor, anchors: Tensor, valid: Tensor, iou_threshold: float = 0.5):
    """Each anchor's ground-truth box index, or -1, for a batch: (batch, anchors).

    As the book: every anchor whose best IoU is >= iou_threshold takes that box; then, greedily, the
    largest remaining IoU in the table pairs its anchor and box, and that anchor's row and box's column
    are discarded, once per ground-truth box. `valid` (batch, boxes) masks out padding boxes."""
    batch, num_gt = ground_truth.shape[:2]
    num_anchors = anchors.shape[0]
    if num_gt == 0:
        return torch.full((batch, num_anchors), -1, dtype=torch.long, device=anchors.device)
    jaccard = torch.stack([box_iou(anchors, gt) for gt in ground_truth])  # (batch, anchors, boxes)
    jaccard = jaccard.masked_fill(~valid[:, None, :], -1.0)
    max_ious, indices = jaccard.max(dim=2)
    mapping = torch.where(max_ious >= iou_threshold, indices, -1)
    rows = torch.arange(batch, device=anchors.device)
    for _ in range(num_gt):
        flat = jaccard.reshape(batch, -1)
        best, max_idx = flat.max(dim=1)
        found = best >= 0  # an image whose boxes are all paired (or padding) has only -1 left
        box_idx, anc_idx = max_idx % num_gt, max_idx // num_gt
        mapping[rows[found], anc_idx[found]] = box_idx[found]
        jaccard[rows[found], :, box_idx[found]] = -1.0
        jaccard[rows[found], anc_idx[found], :] = -1.0
    return mapping


def offset_boxes(anchors: Tensor, boxes: Tensor, eps: float = 1e-6) -> Tensor:
    """The book's offsets of boxes from anchors: 10·Δxy/wh_anchor and 5·log(wh/wh_anchor)."""
    c_anc, c_box = box_corner_to_center(anchors), box_corner_to_center(boxes)
    offset_xy = 10 * (c_box[..., :2] - c_anc[..., :2]) / c_anc[..., 2:]
    offset_wh = 5 * torch.log(eps + c_box[..., 2:] / c_anc[..., 2:])
    return torch.cat([offset_xy, offset_wh], dim=-1)


def offset_inverse(anchors: Tensor, offsets: Tensor) -> Tensor:
    """Boxes (corners) from anchors and predicted offsets: the inverse of offset_boxes."""
    anc = box_corner_to_center(anchors)
    xy = offsets[..., :2] * anc[..., 2:] / 10 + anc[..., :2]
    wh = torch.exp(offsets[..., 2:] / 5) * anc[..., 2:]
    return box_center_to_corner(torch.cat((xy, wh), dim=-1))


def multibox_target(anchors: Tensor, labels: Tensor, iou_threshold: float = 0.5):
    """(offsets (batch, anchors*4), mask (batch, anchors*4), classes (batch, anchors)) as the book's
    multibox_target: class 0 is background, ground-truth class c becomes c + 1."""
    anchors = anchors.reshape(-1, 4)
    valid = labels[..., 0] >= 0
    mapping = assign_anchor_to_bbox(labels[..., 1:], anchors, valid, iou_threshold)
    matched = mapping >= 0
    idx = mapping.clamp(min=0)
    assigned = torch.gather(labels, 1, idx[..., None].expand(-1, -1, 5))  # (batch, anchors, 5)
    classes = torch.where(matched, assigned[..., 0].long() + 1, 0)
    mask = matched[..., None].float().expand(-1, -1, 4)
    boxes = torch.where(matched[..., None], assigned[..., 1:], anchors)  # unmatched: zero offset, masked
    offsets = offset_boxes(anchors.expand_as(boxes), boxes) * mask
    return offsets.reshape(len(labels), -1), mask.reshape(len(labels), -1), classes


def multibox_detection(
    cls_probs: Tensor,
    offset_preds: Tensor,
    anchors: Tensor,
    nms_threshold: float = 0.5,
    pos_threshold: float = 0.009999999,
) -> Tensor:
    """The book's detections: (batch, anchors, 6) rows of (class, confidence, x1, y1, x2, y2).

    cls_probs is (batch, classes + 1, anchors) with background first. Per image, every anchor predicts its
    most likely non-background class; NMS (over all classes, as the book) keeps the best of overlapping
    boxes; the rest, and those under pos_threshold, get class -1. Kept rows come first, by confidence."""
    anchors = anchors.reshape(-1, 4)
    num_anchors = anchors.shape[0]
    out = []
    for cls_prob, offset_pred in zip(cls_probs, offset_preds, strict=True):
        conf, class_id = torch.max(cls_prob[1:], 0)
        predicted = offset_inverse(anchors, offset_pred.reshape(-1, 4))
        keep = nms(predicted, conf, nms_threshold)
        dropped = torch.ones(num_anchors, dtype=torch.bool, device=anchors.device)
        dropped[keep] = False
        non_keep = dropped.nonzero().reshape(-1)
        order = torch.cat((keep, non_keep))
        class_id = torch.where(dropped, -1, class_id)[order]
        conf, predicted = conf[order], predicted[order]
        below = conf < pos_threshold
        class_id = torch.where(below, -1, class_id)
        conf = torch.where(below, 1 - conf, conf)
        out.append(torch.cat((class_id[:, None].to(conf.dtype), conf[:, None], predicted), dim=1))
    return torch.stack(out)
