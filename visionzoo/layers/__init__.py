"""Building blocks shared by several model families."""
from .attention import PartitionAttention
from .checks import check_image_input
from .cpe import ConvPosEnc
from .depthwise import depthwise_conv2d
from .conv import SameConv2d, avg_pool2x2_same, bn_affine, fold_bn, store_weight_channels_last, tf_same_pad
from .head import ClassifierHead
from .linear import Linear
from .mlp import Mlp
from .neighborhood import NeighborhoodAttention2D
from .rel_pos import RelPosBias2d, relative_position_index, resize_rel_pos_table
from .routing import BiLevelRoutingAttention
from .squeeze_excite import SqueezeExcite
from .token_chunks import residual_mlp

__all__ = [
    "BiLevelRoutingAttention", "ClassifierHead", "ConvPosEnc", "Linear", "Mlp", "NeighborhoodAttention2D", "PartitionAttention",
    "RelPosBias2d", "SameConv2d", "SqueezeExcite", "avg_pool2x2_same", "bn_affine", "check_image_input", "depthwise_conv2d", "fold_bn",
    "relative_position_index", "residual_mlp", "resize_rel_pos_table", "store_weight_channels_last", "tf_same_pad",
]
